"""The four analyses as library calls; each writes PNGs, ``numbers.json`` and ``report.html`` into a folder.

    model, processor, config = samples.load_model("organism")
    analyze_sinks(model, processor, image, "is there a circle in the image ?", config, "out/sinks")
    analyze_attention(model, processor, image, question, config, "out/attention", layers=[2], heads=None,
                      methods=("var", "pai", "vaf"))
    analyze_heads(model, processor, samples.load_samples("organism-pope", 50), config, "out/heads",
                  methods=("var", "pai", "vaf"))
    analyze_ablations(model, processor, samples.load_samples("organism-pope", 50), config, "out/ablate")

One prompt costs one forward for the sink analysis (phi, sinks, attention and value norms all come from
the same hooks) and one more per method (VAR by default) for the attention maps. ``methods``: the
attention-side methods to show next to the model as loaded, by name or config (``vasink.analysis.methods``:
VAR, PAI, VAF; VCD changes only the output logits and is refused).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..api import var
from ..config import PRESETS, VARConfig
from ..generation import generate_answers
from ..models import adapter_for
from .ablations import ABLATIONS, DEFAULT_ABLATIONS, paired_difference
from .attention_maps import image_grids
from .capture import Capture, capture_forward
from .figures import attention_figures, processed_image, readable_tokens
from .heads import HeadMap, MassChange, heads_figure, mass_change_figure
from .methods import methods_to_show
from .report import Section, Table, write_report
from .residual import ResidualTable, residual_figure
from .samples import build_inputs
from .sink_figures import phi_strip_figure, sink_dimension_figure, sink_grid, sink_grid_figure


def model_shape(model) -> tuple[int, int]:
    """(decoder layers, query heads) of the text backbone."""
    adapter = adapter_for(model)
    return len(adapter.decoder_layers(model)), adapter.text_config(model).num_attention_heads


def check_indices(what: str, values, count: int, option: str) -> list[int]:
    values = [int(v) for v in values]
    bad = [v for v in values if not 0 <= v < count]
    if bad:
        raise ValueError(f"{option} {bad} out of range: the model has {count} {what} (0..{count - 1}); "
                         f"pass {option} with values in 0..{count - 1}")
    return values


def config_dict(config: VARConfig, model=None, **extra) -> dict:
    """What the report shows as its configuration: the VARConfig, the model, and run settings."""
    shown = {"model": model_name(model)} if model is not None else {}
    return {**shown, **dataclasses.asdict(config), **extra}


def model_name(model) -> str:
    """The model's hub id or folder; "organism" (with its training steps) for the shipped checkpoint."""
    from ..organism import CHECKPOINT_DIR

    name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    if name and Path(name).resolve() == CHECKPOINT_DIR:
        steps = CHECKPOINT_DIR / "trained_steps.json"
        return "organism" + (f" ({steps.read_text().strip()})" if steps.exists() else "")
    return name


def _device(model):
    return next(model.parameters()).device


def attention_drawn(capture: Capture, layer: int) -> dict:
    """Head-mean attention of the eligible rows per key token of each kind, and the visual sinks' share."""
    weights = capture.weights[layer][:, capture.eligible_rows()].mean(0)  # (E, K)
    per_key = weights.mean(0)  # (K,)
    visual_sinks = capture.visual_sinks(layer)
    nonsink = capture.visual & ~capture.sinks[layer]
    visual_mass = float(per_key[capture.visual].sum())
    return {
        "bos": float(per_key[capture.first_token]),
        "per_visual_sink": float(per_key[visual_sinks].mean()) if visual_sinks.any() else float("nan"),
        "per_visual_nonsink": float(per_key[nonsink].mean()) if nonsink.any() else float("nan"),
        "visual_mass": visual_mass,
        "visual_sink_share_of_visual": float(per_key[visual_sinks].sum()) / visual_mass if visual_mass else float("nan"),
    }


# -- 1. sinks ------------------------------------------------------------------------------------------------


def analyze_sinks(model, processor, image, question: str, config: VARConfig, out_dir, echo=print) -> Path:
    out_dir = Path(out_dir)
    inputs = build_inputs(processor, image, question, _device(model))
    capture = capture_forward(model, inputs, config, ratios=True)  # the only forward
    grid = image_grids(model, inputs)[0][0]
    shown = processed_image(processor, inputs, image)
    tokens = readable_tokens(processor.tokenizer, capture.input_ids.tolist())
    figures = [phi_strip_figure(capture, out_dir / "phi_strip.png", tokens),
               sink_dimension_figure(capture, out_dir / "sink_dimensions.png"),
               sink_grid_figure(capture, grid, shown, out_dir / "visual_sinks.png")]
    layers, rows = [], []
    for layer in range(capture.num_layers):
        cells = sink_grid(capture, grid, layer).nonzero().tolist()
        drawn = attention_drawn(capture, layer)
        entry = {"layer": layer, "bos_phi": float(capture.phi[layer, 0]),
                 "median_phi": float(capture.phi[layer].median()),
                 "max_visual_phi": float(capture.phi[layer][capture.visual].max()),
                 "text_sinks": capture.text_sinks(layer).nonzero().flatten().tolist(),
                 "visual_sink_cells": cells, "visual_sink_fraction": len(cells) / (grid[0] * grid[1]),
                 "attention": drawn}
        layers.append(entry)
        rows.append([layer, entry["bos_phi"], entry["median_phi"], entry["max_visual_phi"], len(cells),
                     drawn["bos"], drawn["per_visual_sink"], drawn["per_visual_nonsink"],
                     drawn["visual_sink_share_of_visual"]])
    table = Table("per layer (input): phi and the head-mean attention of the text queries after the image",
                  ["layer", "BOS phi", "median phi", "max visual phi", "visual sinks", "attn to BOS",
                   "attn per visual sink", "attn per non-sink visual", "sinks' share of visual attn"], rows)
    text = (f"Sink dimensions {list(capture.sink_dims)}, tau {capture.tau:g}. Prompt: {question!r} "
            f"({len(capture.input_ids)} tokens, {int(capture.visual.sum())} image tokens on a {grid[0]}x{grid[1]} "
            "grid). Layers 0 and 1 are not searched: the massive activation appears from layer 2 on "
            "(docs/method.md#sink-tokens-per-layer in the vasink repository).")
    sections = [Section("Sinks of one prompt", text, figures, [table])]
    path = write_report(out_dir, "vasink sinks", sections,
                        {"question": question, "layers": layers, "image_tokens": int(capture.visual.sum()),
                         "modified_layers": list(config.modified_layers(capture.num_layers))},
                        config_dict(config, model))
    echo(f"wrote {path}")
    return path


# -- 2. attention before / after VAR -----------------------------------------------------------------------


def image_map(capture: Capture, layer: int, heads, row: int, grid) -> torch.Tensor:
    rows, cols, positions = grid
    weights = capture.weights[layer][:, row]  # (H, K)
    weights = weights[list(heads)] if heads is not None else weights
    return weights.mean(0)[positions.cpu()].reshape(rows, cols)


def analyze_attention(model, processor, image, question: str, config: VARConfig, out_dir, *, layers=None,
                      heads=None, queries=(-1,), methods=("var",), echo=print) -> Path:
    """Text-to-image attention of each query row with every method of ``methods`` on (by name, "var", "pai",
    "vaf", or config), next to the model as loaded; VAR's layers (``config``) unless ``layers`` is given."""
    out_dir = Path(out_dir)
    num_layers, num_heads = model_shape(model)
    shown_methods = methods_to_show(methods, config)
    layers = check_indices("decoder layers", layers, num_layers, "--layers") if layers \
        else list(config.modified_layers(num_layers)) or [num_layers - 1]
    heads = check_indices("attention heads", heads, num_heads, "--heads") if heads else None
    inputs = build_inputs(processor, image, question, _device(model))
    before = capture_forward(model, inputs, config)
    rows = before.rows(queries)  # validates the query positions
    runs = {label: capture_forward(model, inputs, config, method=method) for label, method in shown_methods}
    grid = image_grids(model, inputs)[0][0]
    shown = processed_image(processor, inputs, image)
    tokens = readable_tokens(processor.tokenizer, before.input_ids.tolist())
    head_groups = [[h] for h in heads] if heads is not None else [None]
    figures, records = [], []
    for query, row in zip(queries, rows.tolist()):
        position = int(before.query_positions[row])
        panels = []
        for layer in layers:
            for group in head_groups:
                name = f"layer {layer}, " + (f"head {group[0]}" if group else "mean of heads")
                off = image_map(before, layer, group, row, grid)
                on = [(label, image_map(run, layer, group, row, grid)) for label, run in runs.items()]
                sinks = sink_grid(before, grid, layer)
                panels.append((name, sinks, off, on))
                records.append({"query": position, "token": tokens[position], "layer": layer,
                                "heads": group or "mean", "visual_mass_before": float(off.sum()),
                                "visual_sink_mass_before": float(off[sinks].sum()),
                                "methods": {label: {"visual_mass": float(grid_map.sum()),
                                                    "visual_sink_mass": float(grid_map[sinks].sum())}
                                            for label, grid_map in on}})
        title = f"query token {position} '{tokens[position]}' of {question!r}"
        figures += attention_figures(shown, panels, title, out_dir / f"attention_query{position}.png")
    labels = list(runs)
    table = Table("text-to-image attention of each query row, methods off and each on",
                  ["query", "token", "layer", "heads", "visual off", *[f"visual {label}" for label in labels],
                   "sinks off", *[f"sinks {label}" for label in labels]],
                  [[r["query"], r["token"], r["layer"], r["heads"], r["visual_mass_before"],
                    *[r["methods"][label]["visual_mass"] for label in labels], r["visual_sink_mass_before"],
                    *[r["methods"][label]["visual_sink_mass"] for label in labels]] for r in records])
    text = (f"VAR with rho {config.rho:g}, p {config.p:g}, min visual attention {config.min_visual_attention:g} "
            f"(reference path); layers VAR may modify: {list(config.modified_layers(num_layers))}. "
            + "".join(f"{label} modifies layers {list(method.modified_layers(num_layers))}. "
                      for label, method in shown_methods if label != "VAR")
            + "PAI is shown without its guidance (a second pass over the output logits, not attention); VCD "
            "changes only the output logits and has no map. Rows of one figure share one colour scale.")
    sections = [Section("Text-to-image attention, methods off and on", text, figures, [table])]
    path = write_report(out_dir, "vasink attention", sections, {"question": question, "maps": records},
                        config_dict(config, model, methods=[label for label, _ in shown_methods]))
    echo(f"wrote {path}")
    return path


# -- 3. heads over a question set ----------------------------------------------------------------------------


def analyze_heads(model, processor, samples, config: VARConfig, out_dir, *, methods=(), echo=print) -> Path:
    """The head-test map over ``samples``; with ``methods`` (names or configs of VAR, PAI, VAF) also each
    method's change of the visual mass per (layer, head) (``heads_methods.png``): one more forward per method
    and prompt."""
    out_dir = Path(out_dir)
    num_layers, num_heads = model_shape(model)
    shown_methods = methods_to_show(methods, config)
    accumulator = HeadMap(num_layers, num_heads, config.min_visual_attention)
    changes = {label: MassChange(num_layers, num_heads) for label, _ in shown_methods}
    for sample in tqdm(samples, desc="heads", unit="prompt"):
        inputs = build_inputs(processor, sample.image, sample.prompt, _device(model))
        base = capture_forward(model, inputs, config)
        accumulator.add(base)
        for label, method in shown_methods:
            changes[label].add(base, capture_forward(model, inputs, config, method=method, stock_twin=True))
    result = accumulator.result()
    modified = config.modified_layers(num_layers)
    figures = [heads_figure(result, modified, out_dir / "heads.png", config.skip_layers_without_visual_sink)]
    header = ["layer", "prompts with visual sink", "mean m_V", "mean r"] + [f"selected ({p})" for p in PRESETS]
    rows = [[layer, result["prompts_with_visual_sink"][layer], result["visual_mass"][layer].mean(),
             np.nanmean(result["nonsink_ratio"][layer]) if np.isfinite(result["nonsink_ratio"][layer]).any()
             else float("nan")] + [result["selected"][p][layer].mean() for p in PRESETS] for layer in range(num_layers)]
    text = (f"{result['prompts']} prompts, {result['rows']} eligible text query rows. Head test: "
            f"m_V >= {config.min_visual_attention:g} and r >= rho. Columns are means over heads; the figure and "
            f"numbers.json have every head. VAR modifies layers {list(modified)}.")
    tables = [Table("per layer (means over heads)", header, rows)]
    numbers = {"heads": result, "modified_layers": list(modified)}
    if changes:
        method_layers = {label: list(method.modified_layers(num_layers)) for label, method in shown_methods}
        results = {label: change.result() for label, change in changes.items()}
        figures.append(mass_change_figure(results, method_layers, out_dir / "heads_methods.png"))
        tables.append(Table("change of the mean visual mass m_V per layer (means over heads): each method's own "
                            "edit, and the total change against the model as loaded",
                            ["layer", *[f"{label} {kind}" for label in results for kind in ("own", "total")]],
                            [[layer, *[results[label][kind][layer].mean() for label in results
                                       for kind in ("own", "total")]] for layer in range(num_layers)]))
        text += (" Methods: " + "; ".join(f"{label} modifies layers {layers}"
                                          for label, layers in method_layers.items())
                 + ". Own edit: the method's weights minus the stock attention of the same queries and keys (zero "
                 "where it changes nothing); total: minus the model as loaded (its edit and what its earlier "
                 "layers did to this layer's input). PAI edits only the last row of each prompt, so its mean over "
                 "the rows is diluted by their number.")
        numbers["methods"] = {label: {**results[label], "modified_layers": method_layers[label]} for label in results}
    sections = [Section("Image-centric heads", text, figures, tables)]
    path = write_report(out_dir, "vasink heads", sections, numbers,
                        config_dict(config, model, methods=list(changes)))
    echo(f"wrote {path}")
    return path


# -- 4. ablations ------------------------------------------------------------------------------------------


def read_base_answers(folder, model_name: str | None = None,
                      max_new_tokens: int | None = None) -> dict[str, tuple[str, str]]:
    """``id -> (prompt_hash, answer)`` of the base arm in a ``vasink eval`` output folder (all shards; a
    cut-off last line is skipped): its greedy answers under the folder's current base config only. Refused: a
    folder that evaluated another model (``model_name``), a base arm that sampled (not the greedy answers the
    ablations generate), answers cut at another length (``max_new_tokens``)."""
    from ..eval.records import read_records, read_run

    stored = read_run(folder)
    run, base = stored["run"], stored["arms"].get("base")
    if model_name is not None and run.get("model") != model_name:
        raise ValueError(f"--base-records {folder} holds answers of model {run.get('model')!r}, not {model_name!r}")
    if base is None:
        raise ValueError(f"--base-records {folder} has no base arm (run vasink eval with --var off or both)")
    if base.get("decoding") is not None:
        raise ValueError(f"--base-records {folder}: its base arm sampled its answers ({base['decoding']}); the "
                         f"ablations compare greedy answers, so pass a greedy run (--decoding greedy) or leave "
                         f"--base-records out")
    if max_new_tokens is not None and run.get("max_new_tokens", max_new_tokens) != max_new_tokens:
        raise ValueError(f"--base-records {folder} cut its answers at {run['max_new_tokens']} new tokens, these "
                         f"samples at {max_new_tokens}; leave --base-records out")
    return {r["id"]: (r.get("prompt_hash"), r["raw"]) for r in read_records(folder)
            if r.get("arm") == "base" and r.get("config_hash") == base["config_hash"] and r.get("run", 0) == 0}


def run_conditions(model, processor, samples, config: VARConfig, names, seeds,
                   base_answers: dict | None = None) -> tuple[list[dict], dict]:
    """Answers of every sample under every condition, and the residual table (one capture per sample).

    ``base_answers`` (``id -> (prompt_hash, answer)``, from an evaluation run): reused instead of generating
    the base where the id and prompt match.
    """
    from ..eval.registry import prompt_hash

    num_layers, _ = model_shape(model)
    modified = list(config.modified_layers(num_layers))
    reference = config.replace(implementation="reference")
    residual = ResidualTable(num_layers)
    records = []
    for sample in tqdm(samples, desc="ablations", unit="prompt"):
        inputs = build_inputs(processor, sample.image, sample.prompt, _device(model))
        capture = capture_forward(model, inputs, config, values=True)
        residual.add(capture)
        sink_layers = [layer for layer in modified if bool(capture.visual_sinks(layer).any())]
        # No visual sink where the rules may act: every rule is skipped (the core's default), answers = base.
        untouched = not sink_layers and config.skip_layers_without_visual_sink
        answers = {}
        for name in ("base", *names):
            ablation = ABLATIONS[name]
            for seed in (seeds if ablation.seeded else (None,)):
                key = name if seed is None else f"{name}/seed{seed}"
                if untouched and name != "base":
                    answers[key] = answers["base"]
                    continue
                known = (base_answers or {}).get(sample.id)
                if name == "base" and known and known[0] == prompt_hash(sample.prompt):
                    answers[key] = known[1]
                    continue
                with var(model, reference, intervention=ablation.make(seed or 0, [sample.id])):
                    answers[key] = generate_answers(model, processor, inputs, sample.max_new_tokens)[0]
        records.append({"id": sample.id, "subset": sample.subset, "prompt": sample.prompt,
                        "target": sample.target, "answers": answers,
                        "correct": {k: bool(sample.score(v)) for k, v in answers.items()},
                        "visual_sink_layers": sink_layers,
                        "visual_sinks_at": {l: int(capture.visual_sinks(l).sum()) for l in modified}})
    return records, residual.result()


def summarize(records: list[dict], names, seeds) -> dict:
    base = np.array([r["correct"]["base"] for r in records], float)
    summary = {"base": {"accuracy": float(base.mean()), "n": len(records)}}
    for name in names:
        keys = [f"{name}/seed{s}" for s in seeds] if ABLATIONS[name].seeded else [name]
        for key in keys:
            summary[key] = paired_difference(np.array([r["correct"][key] for r in records], float), base)
        if len(keys) > 1:  # per-sample mean over seeds, then the paired CI
            mean = np.array([np.mean([r["correct"][k] for k in keys]) for r in records])
            summary[f"{name}/mean"] = paired_difference(mean, base)
    return summary


def analyze_ablations(model, processor, samples, config: VARConfig, out_dir, *, names=DEFAULT_ABLATIONS,
                      seeds=(0, 1, 2), base_records=None, model_name: str | None = None, echo=print) -> Path:
    """``base_records``: a ``vasink eval`` output folder whose base answers are reused (same model, ids and
    prompts; ``model_name`` is checked against the folder's when given)."""
    out_dir = Path(out_dir)
    names = [n for n in names if n != "base"]  # the base condition always runs, once
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablations {unknown}; choose from {', '.join(DEFAULT_ABLATIONS)}")
    base_answers = (read_base_answers(base_records, model_name, samples[0].max_new_tokens if samples else None)
                    if base_records else None)
    records, residual = run_conditions(model, processor, samples, config, names, seeds, base_answers)
    summary = summarize(records, names, seeds)
    with_sink = sum(bool(r["visual_sink_layers"]) for r in records)
    rows = [["base", "no change", summary["base"]["accuracy"], 0.0, "", 0]]
    for key, entry in summary.items():
        if key == "base":
            continue
        name = key.split("/")[0]
        rows.append([key, ABLATIONS[name].description, entry["accuracy"], entry["delta"],
                     f"[{entry['ci95'][0]:+.3f}, {entry['ci95'][1]:+.3f}]", entry["changed"]])
    table = Table("accuracy per condition on the same samples; delta vs base with a 95% paired bootstrap CI",
                  ["condition", "what", "accuracy", "delta", "95% CI", "answers changed"], rows)
    residual_rows = [[layer, name] + [residual[q][layer, c] for q in
                                      ("attention", "value_norm", "contribution", "contribution_per_attention")]
                     for layer in range(residual["attention"].shape[0])
                     for c, name in enumerate(residual["classes"])]
    residual_table = Table("residual contribution per token class (eligible text queries, base model)",
                           ["layer", "class", "attention", "||W_OV x||", "||a W_OV x||", "per unit attention"],
                           residual_rows)
    text = (f"{len(records)} samples; {with_sink} have a visual sink in a layer VAR considers "
            f"({list(config.modified_layers(model_shape(model)[0]))}): the rules act only there. Every condition, "
            "the base included, runs on the reference attention path; masking renormalizes each row."
            + (f" Base answers reused from {base_records} where the sample matches." if base_records else ""))
    sections = [Section("Ablations", text, [], [table]),
                Section("Residual contribution", "", [residual_figure(residual, out_dir / "residual.png")],
                        [residual_table])]
    path = write_report(out_dir, "vasink ablate", sections,
                        {"summary": summary, "residual": residual, "records": records,
                         "modified_layers": list(config.modified_layers(model_shape(model)[0]))},
                        config_dict(config, model, seeds=list(seeds), ablations=list(names)))
    echo(f"wrote {path}")
    return path
