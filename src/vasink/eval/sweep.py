"""``vasink sweep``: a method over a grid of its parameters on one benchmark, sharing one base arm.

    vasink sweep --bench pope --rho 0.5,0.8                        # VAR (the default method)
    vasink sweep --bench pope --method pai --grid alpha=0.2,0.5 --grid gamma=1,1.1

The base arm's records are written once (or found from an earlier eval/sweep in the same folder) and
reused by every grid point; each point is an arm named ``var-rho<R>-p<P>-tau<T>`` (VAR) or
``<method>-<field><value>...`` (the swept fields of another method), or the name of an arm of the folder
that already has the same config (an eval's ``var`` or ``pai``), whose records are then reused.

Without ``--limit``, a sweep in a folder that already holds base answers runs on those samples only (the
eval before it chose them); ``--limit N`` sets the samples as in ``vasink eval``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from .runner import EvalSettings, prepare, run_eval


def arm_name(rho: float, p: float, tau: float) -> str:
    return f"var-rho{rho:g}-p{p:g}-tau{tau:g}"


def parse_grid(text: str | None, default: float | None, flag: str = "a sweep grid") -> list[float | None]:
    """"0.5,0.8" -> [0.5, 0.8]; None -> [default]. ``flag`` names the option in the error."""
    if text is None:
        return [default]
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise ValueError(f"{flag} takes comma-separated numbers such as 0.5,0.8, got {text!r}")
    return values


def parse_grids(items) -> dict[str, list]:
    """["alpha=0.2,0.5", "gamma=1.1"] -> {"alpha": [0.2, 0.5], "gamma": [1.1]} (--grid FIELD=V1,V2)."""
    grid: dict[str, list] = {}
    for item in items or ():
        name, sep, values = item.partition("=")
        if not (sep and name.strip()):
            raise ValueError(f"--grid takes FIELD=V1,V2 (e.g. alpha=0.2,0.5), got {item!r}")
        grid[name.strip()] = parse_grid(values, None, f"--grid {name.strip()}")
    return grid


def run_sweep(settings: EvalSettings, rhos: Sequence[float | None] = (None,), ps: Sequence[float | None] = (None,),
              taus: Sequence[float | None] = (None,), loaded=None, echo=print, method: str = "var",
              grid: dict[str, list] | None = None) -> dict:
    """Evaluate base + every point of the grid (VAR: rho x p x tau x ``grid``; another method: ``grid``
    over its config's fields, from ``settings.params[method]``); returns run_eval's summary."""
    from . import records
    from .arms import Arm, get_method
    from .loading import load_model
    from .runner import run_description

    prepared = prepare(settings)  # fail on data / images / judge before loading the model
    bench, subset, samples, shard = prepared
    out = settings.output_dir()
    if settings.limit is None:
        done = {r["id"] for r in records.read_records(out) if r.get("arm") == "base"}
        if done:
            samples = [s for s in samples if s.id in done]
            echo(f"sweep: no --limit, so the {len(samples)} samples whose base answers {out} holds "
                 f"(pass --limit to choose others)")
            prepared = (bench, subset, samples, shard)
    if loaded is None:  # and on another run's folder
        records.check_run(out, run_description(settings, bench, subset, settings.model), {})
        loaded = load_model(settings.model, settings.device, settings.dtype)
    grid = dict(grid or {})
    chosen = get_method(method)
    fixed = dict(settings.params.get(method, {}))
    if method == "var":  # rho, p, tau: the VAR flags; tau also picks the sink threshold of the base config
        grid = {"rho": list(rhos), "p": list(ps), "tau": list(taus), **grid}
    existing = _existing_arms(out)
    arms = {}
    for point in itertools.product(*grid.values()):
        values = {k: v for k, v in zip(grid, point) if v is not None}
        config = chosen.build(settings, bench, loaded, {**fixed, **values})
        if config is None:
            raise ValueError(f"--method {method}: a method without parameters has nothing to sweep")
        payload = records.as_stored(Arm("", method, config).payload())
        name = next((arm for arm, stored in existing.items() if stored == payload), None)
        arms[name or point_name(method, config, grid)] = config
    sweep_settings = EvalSettings(**{**settings.__dict__, "arms": ("base",), "params": {}, "extra_arms": arms})
    return run_eval(sweep_settings, loaded=loaded, prepared=prepared)


def point_name(method: str, config, grid: dict) -> str:
    """A grid point's arm name: VAR's ``var-rho<R>-p<P>-tau<T>``, else the method and its swept fields."""
    if method == "var":
        extra = [k for k in grid if k not in ("rho", "p", "tau")]
        return arm_name(config.rho, config.p, config.tau) + "".join(f"-{k}{_short(getattr(config, k))}" for k in extra)
    return method + "".join(f"-{k}{_short(getattr(config, k))}" for k in grid)


def _short(value) -> str:
    if isinstance(value, (tuple, list)):
        return "_".join(_short(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _existing_arms(out) -> dict:
    """Arm name -> VAR config (as run.json stores it) of the VAR arms already in ``out``."""
    from . import records

    try:
        run = records.read_run(out)
    except FileNotFoundError:
        return {}
    return {name: info["config"] for name, info in run["arms"].items() if info.get("config") is not None}
