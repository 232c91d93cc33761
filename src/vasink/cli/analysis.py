"""Commands ``vasink sinks``, ``attention``, ``heads`` and ``ablate`` (wrappers over ``vasink.analysis``)."""

from __future__ import annotations

from ..config import PRESETS
from .flags import int_list as _int_list
from .flags import non_negative_int, non_negative_int_list, positive_int


# vasink.analysis.methods.ATTENTION_METHODS, without importing it for --help
ATTENTION_METHODS = "var, pai, vaf"
METHODS_NOTE = ("each at its defaults (docs/peers.md), VAR with this command's config, PAI without its guidance; "
                "VCD changes only the output logits, not attention, so it has no map and is refused")

# command -> its one-line help (vasink --help lists these without building the parsers)
COMMANDS = {
    "sinks": "phi per token and layer, sink dimensions, visual sinks on the image",
    "attention": "text-to-image attention before and after VAR (or PAI, VAF: --methods var,pai,vaf)",
    "heads": "layer x head map of the visual non-sink ratio and the head test (--methods: each method's change)",
    "ablate": "the paper's ablations (sink masking, no head test, budget target)",
}


def add_commands(commands) -> None:
    sinks = commands.add_parser("sinks", help=COMMANDS["sinks"])
    _model_options(sinks, "vasink-sinks")
    _image_options(sinks)
    sinks.set_defaults(func=run_sinks)

    attention = commands.add_parser("attention", help=COMMANDS["attention"])
    _model_options(attention, "vasink-attention")
    _image_options(attention)
    attention.add_argument("--layers", type=non_negative_int_list, default=None,
                           help="decoder layers, e.g. 2,3 (default: the layers VAR may modify)")
    attention.add_argument("--heads", type=non_negative_int_list, default=None,
                           help="query heads, one panel each (default: the mean over all heads)")
    attention.add_argument("--query", type=_int_list, default=[-1],
                           help="query token positions, negative from the end, e.g. --query=-1,-3 (default: -1, the last token)")
    attention.add_argument("--methods", default="var",
                           help=f"attention-side methods, one panel each next to the model as loaded, comma-separated, "
                                f"any of {ATTENTION_METHODS} (default: var); {METHODS_NOTE}")
    attention.set_defaults(func=run_attention)

    heads = commands.add_parser("heads", help=COMMANDS["heads"])
    _model_options(heads, "vasink-heads")
    _bench_options(heads)
    heads.add_argument("--methods", default="",
                       help=f"also map each method's change of the attention to the image per layer and head "
                            f"(heads_methods.png), comma-separated, any of {ATTENTION_METHODS} (default: none); "
                            f"{METHODS_NOTE}")
    heads.set_defaults(func=run_heads)

    ablate = commands.add_parser("ablate", help=COMMANDS["ablate"])
    _model_options(ablate, "vasink-ablate")
    _bench_options(ablate)
    ablate.add_argument("--seeds", type=non_negative_int_list, default=[0, 1, 2], help="random-mask seeds (default: 0,1,2)")
    ablate.add_argument("--ablations", type=lambda s: [x for x in s.split(",") if x], default=None,
                        help="subset of conditions, comma-separated (default: all)")
    ablate.add_argument("--base-records", default=None,
                        help="a vasink eval --out folder: reuse its base answers for the same samples")
    ablate.set_defaults(func=run_ablate)


def _model_options(parser, out_default: str) -> None:
    parser.add_argument("--model", default="organism",
                        help="'organism' (the shipped model, default), or a local folder / hub id of a LLaVA model")
    parser.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="VAR preset (rho); default: the model's own config")
    parser.add_argument("--tau", type=float, default=None, help="phi threshold (default: the model's)")
    parser.add_argument("--sink-dims", type=non_negative_int_list, default=None,
                        help="sink dimensions, comma-separated (default: the known table or the organism's)")
    parser.add_argument("--p", type=float, default=None, help="fraction of sink attention VAR removes")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def _image_options(parser) -> None:
    parser.add_argument("--image", default=None, help="image file (default with the organism: a test scene)")
    parser.add_argument("--question", default=None, help="question about the image")
    parser.add_argument("--scene", type=non_negative_int, default=0,
                        help="with the organism and no --image: which test scene (default: 0)")


def _bench_options(parser) -> None:
    parser.add_argument("--bench", default="organism-pope",
                        help="question set: organism-pope (default), organism-vqa, ... or a vasink.eval benchmark")
    parser.add_argument("--limit", type=positive_int, default=50,
                        help="number of samples, per subset for vasink.eval benchmarks with subsets (default: 50)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="scene seed of the sets drawn here (organism-counting, -spatial, -vqa)")


def _load(args):
    from ..analysis.samples import load_model
    from ..config import VARConfig

    model, processor, config = load_model(args.model, device=args.device)
    if config is None:
        if not (args.sink_dims and args.tau):
            raise FileNotFoundError("the organism checkpoint has no measured sink dims (checkpoint/vasink.json): "
                                    "pass --sink-dims and --tau")
        config = VARConfig()
    return model, processor, config.with_preset(args.preset, tau=args.tau, p=args.p,
                                                sink_dims=tuple(args.sink_dims) if args.sink_dims else None)


def _image_and_question(args):
    from ..analysis.samples import open_image

    if args.image is not None:
        if not args.question:
            raise ValueError("--question is required with --image (the text the model is asked about the image)")
        return open_image(args.image), args.question
    if args.model != "organism":
        raise ValueError("--image is required for a model other than the organism: pass --image PATH --question TEXT")
    from ..organism import scenes

    if args.scene < 0:
        raise ValueError(f"--scene must be 0 or more, got {args.scene}")
    scene = scenes.sample("test", args.scene + 1, seed=0)[args.scene]
    return scene.image, args.question or scene.questions[0][0]


def run_sinks(args) -> int:
    from ..analysis.runs import analyze_sinks

    image, question = _image_and_question(args)
    model, processor, config = _load(args)
    analyze_sinks(model, processor, image, question, config, args.out)
    return 0


def run_attention(args) -> int:
    from ..analysis.methods import method_names
    from ..analysis.runs import analyze_attention

    methods = method_names(args.methods)  # before the model loads: VCD or a typo is a one-line error at once
    image, question = _image_and_question(args)
    model, processor, config = _load(args)
    analyze_attention(model, processor, image, question, config, args.out, layers=args.layers, heads=args.heads,
                      queries=args.query, methods=methods)
    return 0


def run_heads(args) -> int:
    from ..analysis.methods import method_names
    from ..analysis.runs import analyze_heads
    from ..analysis.samples import load_samples

    methods = method_names(args.methods)
    samples = load_samples(args.bench, args.limit, args.seed)
    model, processor, config = _load(args)
    analyze_heads(model, processor, samples, config, args.out, methods=methods)
    return 0


def run_ablate(args) -> int:
    from ..analysis.ablations import DEFAULT_ABLATIONS
    from ..analysis.runs import analyze_ablations
    from ..analysis.samples import load_samples

    samples = load_samples(args.bench, args.limit, args.seed)
    model, processor, config = _load(args)
    analyze_ablations(model, processor, samples, config, args.out, names=args.ablations or DEFAULT_ABLATIONS,
                      seeds=args.seeds, base_records=args.base_records, model_name=args.model)
    return 0
