"""VAR's peers, each as its official code does it (docs/peers.md): PAI, VAF (ClearSight) and VCD.

They switch on like VAR, through ``vasink.enable`` / ``vasink.var``::

    with vasink.var(model, vasink.PAIConfig()):          # attention edit + guidance against the image-less prompt
        model.generate(**inputs, do_sample=False)
    with vasink.var(model, vasink.VAFConfig()):          # attention edit only
        model.generate(**inputs, do_sample=False)
    with vasink.var(model, vasink.VCDConfig(seed=55)):   # contrast with the noised image on every token
        model.generate(**inputs, **vasink.peers.official_decoding("vcd"))

An evaluation arm by name: ``method_config("pai", gamma=2.0)`` is the config (None for "base") to pass to
``vasink.var``; ``official_decoding(name)`` the generate keywords of the method's official scripts.
"""

from __future__ import annotations

import difflib

from ..config import VARConfig
from .config import PAIConfig, VAFConfig, VCDConfig, scaled_layers

METHODS = {"base": None, "var": VARConfig, "pai": PAIConfig, "vaf": VAFConfig, "vcd": VCDConfig}

# generate() keywords of each method's official evaluation scripts (docs/peers.md#using-them)
OFFICIAL_DECODING = {
    "base": {"do_sample": False, "num_beams": 1},
    "var": {"do_sample": False, "num_beams": 1},
    "pai": {"do_sample": False, "num_beams": 1},  # README commands: greedy (the README recommends sampling)
    "vaf": {"do_sample": False, "num_beams": 1},  # infer_pope.py: no sampling flags, greedy
    "vcd": {"do_sample": True, "num_beams": 1, "temperature": 1.0, "top_p": 1.0, "top_k": 0},  # pure sampling
}


def method_config(name: str, **params):
    """The config of method ``name`` ("base", "var", "pai", "vaf", "vcd") with ``params`` over its defaults;
    None for "base" (nothing to enable). ``with vasink.var(model, method_config(name)): model.generate(...)``
    runs the arm (for "base", run ``model.generate`` as is)."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=2)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; choose one of {list(METHODS)}")
    if METHODS[name] is None:
        if params:
            raise ValueError(f"method 'base' takes no parameters, got {sorted(params)}")
        return None
    return METHODS[name](**params)


def official_decoding(name: str) -> dict:
    """generate() keywords of method ``name``'s official scripts (VCD samples: seed it for repeatable runs)."""
    if name not in OFFICIAL_DECODING:
        raise ValueError(f"unknown method {name!r}; choose one of {list(OFFICIAL_DECODING)}")
    return dict(OFFICIAL_DECODING[name])


__all__ = ["PAIConfig", "VAFConfig", "VCDConfig", "METHODS", "method_config", "official_decoding", "scaled_layers"]
