"""The emergence curve: how the visual tokens' sink statistics move over an organism training run.

    python -m vasink.organism.emergence RUN_DIR [RUN_DIR2 ...] --out emergence.png
    python -m vasink.organism.emergence RUN_DIR --table 0,50,100,200      # docs/organism.md's table

reads each run's ``log.jsonl`` (written by ``vasink organism train``) and draws, per band of layers, the
visual tokens' phi on the sink dimension (median and 99th percentile, against the monitor's tau), the share
of visual tokens above tau, and the attention the text queries after the image give to all visual tokens,
to the most-attended one, and to BOS; stage 0 (the tower alone) gets its own panel: held-out accuracies and
the tower's largest token norm over the median (a ViT-born high-norm token would push that ratio up).
Several runs are overlaid (one colour each), to compare recipes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_log(run_dir) -> dict:
    """``{"stage0": [records], "monitor": [summaries], "stage2_from": step or None}`` of a run folder's
    ``log.jsonl`` (and ``recipe.json``, for where stage 2 starts)."""
    file = Path(run_dir) / "log.jsonl"
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing: pass the --out folder of `vasink organism train`")
    stage0, monitors = [], []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}, line {number}: not JSON ({error.msg})") from None
        if "monitor" in record:
            monitors.append(record["monitor"])
        elif record.get("stage") == 0 and "held_out" in record:
            stage0.append(record)
    recipe = Path(run_dir) / "recipe.json"
    stage2_from = json.loads(recipe.read_text())["recipe"].get("stage1_steps") if recipe.exists() else None
    return {"stage0": stage0, "monitor": monitors, "stage2_from": stage2_from}


def bands(n_layers: int, first: int = 2) -> dict[str, range]:
    """Layers ``first..n_layers-1`` in three bands of (nearly) equal depth: early, middle, late."""
    edges = np.linspace(first, n_layers, 4).round().astype(int)
    return {name: range(int(a), int(b)) for name, a, b in zip(("early", "middle", "late"), edges[:-1], edges[1:])}


def band_series(monitors: list[dict], key: str, reduce=np.mean) -> dict[str, np.ndarray]:
    """Per band, ``reduce`` of a layer field over the band's layers, one value per monitor record."""
    if not monitors:
        return {}
    out = {}
    for name, layers in bands(len(monitors[0]["layers"])).items():
        out[name] = np.array([reduce([m["layers"][layer][key] for layer in layers]) for m in monitors])
    return out


def table(run: dict, steps=None) -> str:
    """docs/organism.md's emergence table of one run (``read_log``): per monitor record (or only ``steps``),
    the first-token accuracy, the visual tokens' phi median and 99th percentile per band, the largest visual
    phi (and its layer), the share of visual tokens over tau (averaged over layers 2..), and the attention
    the text queries give all visual tokens per band, the most-attended one and BOS (late band)."""
    monitors = [m for m in run["monitor"] if steps is None or m["step"] in steps]
    if not monitors:
        return ""
    tau = monitors[0].get("sink_tau")
    rows = ["| step | stage | first-token accuracy | visual phi median (early / middle / late) | visual phi p99 "
            "(early / middle / late) | largest visual phi (layer) | visual tokens over " + f"{tau} | attention to "
            "all visual tokens (early / middle / late) | to the most-attended one (late) | to BOS (late) |",
            "| --- " * 10 + "|"]
    series = {key: band_series(monitors, key) for key in ("vis_med", "vis_p99", "att_visual", "att_top_visual",
                                                          "att_bos")}
    first = min(bands(len(monitors[0]["layers"]))["early"])

    def three(key, k, digits):
        return " / ".join(f"{series[key][band][k]:.{digits}f}" for band in ("early", "middle", "late"))

    for k, m in enumerate(monitors):
        searched = m["layers"][first:]
        top = max(searched, key=lambda e: e["vis_max"])
        over = float(np.mean([e["vis_sinks"] for e in searched]))
        rows.append(f"| {m['step']} | {m['stage']} | {m['first_token_acc']:.2f} | {three('vis_med', k, 1)} "
                    f"| {three('vis_p99', k, 1)} | {top['vis_max']:.1f} ({top['l']}) | {100 * over:.2f}% "
                    f"| {three('att_visual', k, 3)} | {series['att_top_visual']['late'][k]:.4f} "
                    f"| {series['att_bos']['late'][k]:.2f} |")
    return "\n".join(rows)


def plot(runs: dict[str, dict], out) -> Path:
    """One figure for the runs ``{label: read_log(...)}``; returns the PNG's path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"early": ":", "middle": "--", "late": "-"}
    # the band panels share one key below the figure: a colour per run, a line style per band
    run_key = [Line2D([], [], color=colours[k % len(colours)], label=label) for k, label in enumerate(runs)]
    band_layers = None
    for k, (label, run) in enumerate(runs.items()):
        colour = colours[k % len(colours)]
        stage0 = run["stage0"]
        if stage0:
            steps = [r["step"] for r in stage0]
            ax = axes[0, 0]
            for key, style in (("object_patch_shape_acc", "-"), ("count_acc", "--"), ("caption_retrieval_acc", ":")):
                ax.plot(steps, [r["held_out"][key] for r in stage0], style, color=colour,
                        label=f"{label}: {key.replace('_acc', '').replace('_', ' ')}")
            twin = axes[1, 0]
            twin.plot(steps, [r["held_out"]["token_norm_max_over_median"] for r in stage0], color=colour, label=label)
        monitors = run["monitor"]
        if not monitors:
            continue
        steps = [m["step"] for m in monitors]
        tau = monitors[0].get("sink_tau")
        band_layers = band_layers or bands(len(monitors[0]["layers"]))
        for name, alpha in (("vis_med", 0.5), ("vis_p99", 1.0)):  # median faint, 99th percentile strong
            for band, series in band_series(monitors, name).items():
                axes[0, 1].plot(steps, series, styles[band], color=colour, alpha=alpha)
        if tau is not None and k == 0:
            axes[0, 1].axhline(tau, color="black", linewidth=0.8, label=f"the monitor's tau ({tau})")  # named in the
            # legend below the panel: a label inside the panel would sit on the early band's curves
        for ax, name, scale in ((axes[0, 2], "vis_sinks", 100), (axes[1, 1], "att_visual", 1),
                                (axes[1, 2], "att_top_visual", 1)):
            for band, series in band_series(monitors, name).items():
                ax.plot(steps, scale * series, styles[band], color=colour)
        if run.get("stage2_from") is not None:
            for ax in axes[:, 1:].flat:
                ax.axvline(run["stage2_from"], color=colour, linewidth=0.6, alpha=0.5)
    titles = [["stage 0: tower alone, held-out accuracy", "visual phi on the sink dim (faint: median, strong: p99)",
               "% of visual tokens above tau"],
              ["stage 0: tower's largest token norm / median", "attention from text queries to all visual tokens",
               "attention to the most-attended visual token"]]
    xlabels = [["stage-0 step", "stage 1-2 step (thin line: stage 2 starts)", "stage 1-2 step"],
               ["stage-0 step", "stage 1-2 step", "stage 1-2 step"]]
    for r in range(2):
        for c in range(3):
            ax = axes[r, c]
            ax.set_title(titles[r][c], fontsize=10)
            ax.set_xlabel(xlabels[r][c], fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.16), ncol=2, frameon=False)
    if band_layers:
        run_key += [Line2D([], [], color="grey", linestyle=styles[band], label=f"layers {r.start}-{r.stop - 1} ({band})")
                    for band, r in band_layers.items()]
        fig.legend(handles=run_key, loc="outside lower center", ncol=len(run_key), fontsize=8, frameon=False,
                   title="stage 1-2 panels: colour = run, line = band of layers", title_fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vasink.organism.emergence",
                                     description="plot the visual-sink emergence curve of organism training runs")
    parser.add_argument("runs", nargs="+", help="run folders (the --out of `vasink organism train`); LABEL=DIR names one")
    parser.add_argument("--out", default="emergence.png", help="PNG to write (default: emergence.png)")
    parser.add_argument("--table", default=None, metavar="STEPS",
                        help="draw nothing: print the first run's emergence table (docs/organism.md) at these "
                             "comma-separated steps, or 'all'")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, _, folder = item.rpartition("=") if "=" in item else (Path(item).name, "", item)
        runs[label] = read_log(folder)
    if args.table:
        try:
            steps = None if args.table == "all" else {int(s) for s in args.table.split(",")}
        except ValueError:
            parser.error(f"--table takes comma-separated steps or 'all', got {args.table!r}")
        print(table(next(iter(runs.values())), steps))
        return 0
    print(plot(runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
