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
    out_dir = Path(out_dir)
    model, processor = organism.load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # said below, once, in the demo's own words
        config = organism.recommended_config()
    if not organism.sink_facts().get("emerged", False):
        echo("note: in the shipped organism the sink did not emerge (no massive activation, no visual sink; "
             "docs/organism.md), so VAR leaves its answers unchanged")
    echo(f"organism: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
         f"sink dims {list(config.sink_dims)}, tau {config.tau:g}, rho {config.rho}, p {config.p}")
    scenes = organism.scenes.sample("test", num_scenes, seed=seed)
    written = []
    for index, scene in enumerate(tqdm(scenes, desc="demo scenes", unit="scene")):
        question, truth, family = pick_question(scene, index)
        inputs = organism.build_inputs(processor, scene.image, question)
        base_answer = generate_answers(model, processor, inputs, MAX_NEW_TOKENS)[0]
        with var(model, config) as handle:
            var_answer = generate_answers(model, processor, inputs, MAX_NEW_TOKENS)[0]
            sinks = handle.last_sinks()  # layer -> (1, T), found at the prefill of that generate
        rows, cols, positions = image_grids(model, inputs)[0][0]
        layer = min(sinks, key=lambda l: abs(l - 2))
        sinks_at = sinks[layer][0][positions].reshape(rows, cols)
        patches = [(r, c) for r, c in sinks_at.nonzero().tolist()]
        before = text_to_image_attention(model, inputs, config, var_on=False)
        after = text_to_image_attention(model, inputs, config, var_on=True)
        title = f"{question}  truth: {truth}  |  VAR off: {base_answer}  |  VAR on: {var_answer}"
        path = attention_comparison_figure(scene.image, sinks_at, before, after, title,
                                           out_dir / f"scene_{index:02d}.png")
        written.append(path)
        tqdm.write(f"[{index}] {family}: {question}\n    truth {truth!r}  VAR off {base_answer!r}  VAR on {var_answer!r}"
                   f"\n    visual sinks at layer {layer} (row, col): {patches}")
    echo(f"wrote {len(written)} figures to {out_dir.resolve()}")
    return written
