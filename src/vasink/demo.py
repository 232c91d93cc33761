"""``vasink demo``: the organism's sinks, its answers with VAR off and on, and a figure per scene."""

from __future__ import annotations

import warnings
from pathlib import Path

from tqdm import tqdm

from .analysis import attention_comparison_figure, image_grids, text_to_image_attention
from .api import var
from .generation import generate_answers

DEMO_FAMILIES = ("existence-adversarial", "attribute", "spatial", "counting")
MAX_NEW_TOKENS = 8


def pick_question(scene, index: int):
    wanted = DEMO_FAMILIES[index % len(DEMO_FAMILIES)]
    for question in scene.questions:
        if question[2] == wanted:
            return question
    return scene.questions[0]


def run_demo(out_dir: str | Path = "vasink-demo", num_scenes: int = 4, seed: int = 0, echo=print) -> list[Path]:
    from . import organism

    if num_scenes <= 0:
        raise ValueError(f"--scenes must be at least 1, got {num_scenes}")
    if seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {seed}")
    out_dir = Path(out_dir)
    model, processor = organism.load(log=echo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said below, once, in the demo's own words
        config = organism.recommended_config()
    facts = organism.sink_facts()
    echo(f"organism: SmolLM2-135M-Instruct with a trained vision tower "
         f"({sum(p.numel() for p in model.parameters()) / 1e6:.0f} M parameters); "
         f"sink dims {list(config.sink_dims)}, tau {config.tau:g}, rho {config.rho}, p {config.p}")
    variant = None
    if not facts.get("visual_sinks", False):
        variant = config.replace(skip_layers_without_visual_sink=False)
        echo("note: this model has real text sinks (BOS: phi above tau on dim 507 from layer 2 on, but for layers 10-11) "
             "and few visual sinks, not in most layers as in the paper (docs/organism.md: layer 2 in a third of "
             "the test images, the other layers in at most 6 %), so VAR as the paper defines it acts only in those "
             "layers of those images. Shown beside it: 'VAR, all layers' "
             "(skip_layers_without_visual_sink=False), which moves part of BOS's attention to the image in every "
             "layer, in the heads that look at it.")
    scenes = organism.scenes.sample("test", num_scenes, seed=seed)
    written = []
    for index, scene in enumerate(tqdm(scenes, desc="demo scenes", unit="scene")):
        question, truth, family = pick_question(scene, index)
        inputs = organism.build_inputs(processor, scene.image, question)
        base_answer = generate_answers(model, processor, inputs, MAX_NEW_TOKENS)[0]
        with var(model, config) as handle:
            var_answer = generate_answers(model, processor, inputs, MAX_NEW_TOKENS)[0]
            sinks = handle.last_sinks()  # layer -> (1, T), found at the prefill of that generate
        answers = f"VAR off {base_answer!r}  VAR on {var_answer!r}"
        shown, shown_answer, label = config, var_answer, "VAR on"
        if variant is not None:
            with var(model, variant):
                shown_answer = generate_answers(model, processor, inputs, MAX_NEW_TOKENS)[0]
            shown, label = variant, "VAR, all layers"
            answers += f"  {label} {shown_answer!r}"
        rows, cols, positions = image_grids(model, inputs)[0][0]
        layer = min(sinks, key=lambda l: abs(l - 2))
        sinks_at = sinks[layer][0][positions].reshape(rows, cols)
        patches = [(r, c) for r, c in sinks_at.nonzero().tolist()]
        text_sinks = [p for p in sinks[layer][0].nonzero().flatten().tolist() if p not in set(positions.tolist())]
        before = text_to_image_attention(model, inputs, shown, var_on=False)
        after = text_to_image_attention(model, inputs, shown, var_on=True)
        title = f"{question}  truth: {truth}  |  VAR off: {base_answer}  |  {label}: {shown_answer}"
        path = attention_comparison_figure(scene.image, sinks_at, before, after, title,
                                           out_dir / f"scene_{index:02d}.png", after_label=label)
        written.append(path)
        tqdm.write(f"[{index}] {family}: {question}\n    truth {truth!r}  {answers}"
                   f"\n    layer {layer}: text sinks at positions {text_sinks}, visual sinks (row, col) {patches}")
    echo(f"wrote {len(written)} figures to {out_dir.resolve()}")
    return written
