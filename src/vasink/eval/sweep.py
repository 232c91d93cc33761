"""``vasink sweep``: VAR over a grid of rho / p / tau on one benchmark, sharing one base arm.

The base arm's records are written once (or found from an earlier eval/sweep in the same folder) and
reused by every grid point; each point is an arm named ``var-rho<R>-p<P>-tau<T>``.
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


def run_sweep(settings: EvalSettings, rhos: Sequence[float | None], ps: Sequence[float | None],
              taus: Sequence[float | None], loaded=None) -> dict:
    """Evaluate base + every (rho, p, tau) point; returns run_eval's summary."""
    from . import records
    from .loading import load_model
    from .runner import base_var_config, run_description

    prepared = prepare(settings)  # fail on data / images / judge before loading the model
    bench, subset = prepared[:2]
    if loaded is None:  # and on another run's folder
        records.check_run(settings.output_dir(), run_description(settings, bench, subset, settings.model), {})
        loaded = load_model(settings.model, settings.device)
    base = base_var_config(settings, loaded, tau=taus[0]).with_preset(settings.preset or bench.preset)
    arms = {}
    for rho, p, tau in itertools.product(rhos, ps, taus):
        config = base.with_preset(None, rho=rho, p=p, tau=tau)
        arms[arm_name(config.rho, config.p, config.tau)] = config
    sweep_settings = EvalSettings(**{**settings.__dict__, "var": "off", "extra_arms": arms})
    return run_eval(sweep_settings, loaded=loaded, prepared=prepared)
