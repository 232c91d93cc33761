"""``vasink sweep``: VAR over a grid of rho / p / tau on one benchmark, sharing one base arm.

The base arm's records are written once (or found from an earlier eval/sweep in the same folder) and
reused by every grid point; each point is an arm named ``var-rho<R>-p<P>-tau<T>``, or the name of an arm of
the folder that already has the same VAR config (an eval's ``var``), whose records are then reused.

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


def run_sweep(settings: EvalSettings, rhos: Sequence[float | None], ps: Sequence[float | None],
              taus: Sequence[float | None], loaded=None, echo=print) -> dict:
    """Evaluate base + every (rho, p, tau) point; returns run_eval's summary."""
    from . import records
    from .loading import load_model
    from .runner import base_var_config, config_payload, run_description

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
        loaded = load_model(settings.model, settings.device)
    base = base_var_config(settings, loaded, tau=taus[0]).with_preset(settings.preset or bench.preset)
    existing = _existing_arms(out)
    arms = {}
    for rho, p, tau in itertools.product(rhos, ps, taus):
        config = base.with_preset(None, rho=rho, p=p, tau=tau)
        payload = records.as_stored(config_payload(config))
        name = next((arm for arm, stored in existing.items() if stored == payload),
                    arm_name(config.rho, config.p, config.tau))
        arms[name] = config
    sweep_settings = EvalSettings(**{**settings.__dict__, "var": "off", "extra_arms": arms})
    return run_eval(sweep_settings, loaded=loaded, prepared=prepared)


def _existing_arms(out) -> dict:
    """Arm name -> VAR config (as run.json stores it) of the VAR arms already in ``out``."""
    from . import records

    try:
        run = records.read_run(out)
    except FileNotFoundError:
        return {}
    return {name: info["config"] for name, info in run["arms"].items() if info.get("config") is not None}
