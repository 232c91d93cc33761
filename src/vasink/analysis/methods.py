"""The methods whose attention the analysis can show next to the model as loaded: VAR, PAI and VAF.

    attention_method("pai", config)                  # PAIConfig() with its guidance off: the attention edit alone
    attention_method(vasink.VAFConfig(layers=(3,)), config)
    methods_to_show("var,pai,vaf", config)           # [("VAR", VARConfig), ("PAI", PAIConfig), ("VAF", VAFConfig)]

VAR runs on its reference path (the weights are materialized); PAI and VAF return the weights their own
attention paths compute when asked for them (docs/peers.md). VCD changes only the output logits (a second
pass over a noised image), never the attention: asking for it is an error that names the methods that can.
"""

from __future__ import annotations

import dataclasses
import difflib

from ..config import VARConfig
from ..peers import PAIConfig, VAFConfig, VCDConfig, method_config

ATTENTION_METHODS = ("var", "pai", "vaf")
NOT_ATTENTION = ("VCD changes only the output logits (a contrast with a second pass over a noised image), not the "
                 "attention: it has no attention map or head change to show. The attention-side methods are "
                 + ", ".join(ATTENTION_METHODS))
LOGIT_FIELDS = ("gamma", "cutoff")  # PAI's guidance over the output logits: not part of its attention edit


def method_names(text: str) -> list[str]:
    """"var,pai" (the CLI's --methods) -> ["var", "pai"], checked without a model: VCD, an unknown name or a name
    given twice is a ValueError."""
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    for name in names:
        if name == "vcd":
            raise ValueError(f"--methods {text}: {NOT_ATTENTION}")
        if name not in ATTENTION_METHODS:
            close = difflib.get_close_matches(name, ATTENTION_METHODS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"--methods {text}: unknown method {name!r}; {hint}the attention-side methods are "
                             f"{', '.join(ATTENTION_METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"--methods {text}: a method is named twice")
    return names


def attention_method(method, config: VARConfig):
    """The config to enable to see ``method``'s attention: ``"var"`` (``config`` itself), ``"pai"`` or ``"vaf"``
    (their defaults, docs/peers.md), or a ``VARConfig`` / ``PAIConfig`` / ``VAFConfig``. VAR is put on its
    reference path; PAI's guidance (a second forward over the logits, gamma) is switched off."""
    if isinstance(method, str):
        name = method.strip().lower()
        if name == "vcd":
            raise ValueError(NOT_ATTENTION)
        if name not in ATTENTION_METHODS:
            raise ValueError(f"unknown method {method!r}; the attention-side methods are "
                             f"{', '.join(ATTENTION_METHODS)}")
        method = config if name == "var" else method_config(name)
    if isinstance(method, VCDConfig):
        raise ValueError(NOT_ATTENTION)
    if isinstance(method, VARConfig):
        return method.replace(implementation="reference")
    if isinstance(method, PAIConfig):
        return method.replace(gamma=1.0)
    if isinstance(method, VAFConfig):
        return method
    raise TypeError(f"a method is one of {ATTENTION_METHODS} or a VARConfig, PAIConfig or VAFConfig; "
                    f"got {type(method).__name__}")


def method_label(method) -> str:
    """"VAR", "PAI", "VAF"; a peer's attention settings that differ from its defaults follow in brackets."""
    if isinstance(method, str):
        return method.strip().upper()
    if isinstance(method, VARConfig):
        return "VAR"
    default = type(method)()
    changed = [f"{field.name}={getattr(method, field.name)}" for field in dataclasses.fields(method)
               if field.name not in LOGIT_FIELDS and getattr(method, field.name) != getattr(default, field.name)]
    return method.method.upper() + (f" ({', '.join(changed)})" if changed else "")


def methods_to_show(methods, config: VARConfig) -> list[tuple[str, object]]:
    """``methods`` ("var,pai", or a list of names and configs) -> [(label, config to enable)], in order; VCD, an
    unknown name or a method named twice is a ValueError."""
    if isinstance(methods, str):
        methods = method_names(methods)
    shown = [(method_label(method), attention_method(method, config)) for method in methods]
    labels = [label for label, _ in shown]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"methods {twice} named twice; name each method once")
    return shown
