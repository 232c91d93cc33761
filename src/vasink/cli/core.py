"""Commands ``vasink demo`` and ``vasink organism train``."""

from __future__ import annotations

from .flags import non_negative_int, positive_float, positive_int


# command -> its one-line help (vasink --help lists these without building the parsers)
COMMANDS = {
    "demo": "run the shipped organism on a few scenes, VAR off and on",
    "organism": "the shipped small model",
}


def add_commands(commands) -> None:
    demo = commands.add_parser("demo", help=COMMANDS["demo"])
    demo.add_argument("--out", default="vasink-demo", help="folder for the figures (default: vasink-demo)")
    demo.add_argument("--scenes", type=positive_int, default=4, help="number of test scenes (default: 4)")
    demo.add_argument("--seed", type=non_negative_int, default=0, help="scene seed (default: 0)")
    demo.set_defaults(func=run_demo_command)

    organism = commands.add_parser("organism", help=COMMANDS["organism"])
    organism_commands = organism.add_subparsers(dest="organism_command", required=True)
    train = organism_commands.add_parser("train", help="reproduce the shipped checkpoint from a seed")
    train.add_argument("--out", required=True, help="output folder for the checkpoint and training log")
    train.add_argument("--seed", type=non_negative_int, default=None,
                       help="the data and initialisation seed (default: the resumed run's own, else 0)")
    train.add_argument("--minutes", type=positive_float, default=None, help="stop after this many minutes (run again to resume)")
    train.add_argument("--fresh", action="store_true", help="start over instead of resuming from --out's checkpoint")
    train.add_argument("--device", default="cpu", help="cpu (default, reproduces the shipped run) or cuda")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="a recipe variant: change one field of the recipe (the shipped one for a new --out; "
                            "--recipe FILE's; the --branch-from run's), e.g. --set lora_rank=64 --set "
                            "stage2_families=caption (repeatable; docs/organism.md lists the fields)")
    train.add_argument("--recipe", default=None, metavar="FILE",
                       help="start from the recipe a run recorded (its recipe.json, or a checkpoint's organism.json) "
                            "instead of the shipped one; --set changes fields of it")
    train.add_argument("--branch-from", default=None, metavar="RUN",
                       help="start from RUN's end of stage 1 (its tower and stage-1 state): a stage-2 variant "
                            "without repeating stages 0-1")
    train.set_defaults(func=run_train_command)


def run_demo_command(args) -> int:
    from ..demo import run_demo

    run_demo(args.out, num_scenes=args.scenes, seed=args.seed)
    return 0


def run_train_command(args) -> int:
    from ..organism.train import Recipe, branch, recipe_file, recipe_with, train

    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        settings[key.strip()] = value.strip()
    if args.branch_from and args.fresh:
        raise ValueError("--branch-from starts --out from another run's stage 1 and --fresh would delete it again; "
                         "pass one of the two")
    from pathlib import Path

    # --set changes the recipe the run continues: --recipe FILE, else the branched-from run's, else --out's own
    own = Path(args.branch_from or args.out) / "recipe.json"
    base = (recipe_file(args.recipe) if args.recipe else
            recipe_file(own) if own.exists() and not args.fresh else None)
    recipe = recipe_with(base or Recipe(), settings) if settings else base
    if args.branch_from:
        branch(args.branch_from, args.out)
    train(args.out, seed=args.seed, minutes=args.minutes, recipe=recipe, resume=not args.fresh, device=args.device)
    return 0
