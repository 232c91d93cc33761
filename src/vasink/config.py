"""VARConfig: every knob of sink detection and Visual Attention Redistribution, validated.

Defaults follow the paper: tau 20, rho 0.8 (the paper's setting for general vision-language tasks), p 0.6,
min_visual_attention 0.2 (docs/method.md#the-image-centric-head-test). ``compat="released-code"`` reads
``rho`` and ``p`` the way the authors' released code does (docs/method.md#the-released-code): its ``rho``
bounds the visual *sink* ratio (1 - the paper's rho) and its ``p`` is the fraction of sink attention *kept*
(1 - the paper's p).

Presets are the paper's task settings and mean the same in both modes: in ``compat="released-code"`` their
rho and p are written in the code's meaning (``VARConfig.preset("general", compat="released-code")`` has rho
0.2 and p 0.4: the same heads selected and the same 60% moved as ``VARConfig.preset("general")``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

COMPAT_MODES = ("paper", "released-code")
IMPLEMENTATIONS = ("fast", "reference")

# The paper's three task settings, in the paper's meaning: rho is the minimum visual non-sink ratio of a head,
# p the fraction of sink attention removed. VARConfig.with_preset converts them for compat="released-code".
PAPER_P = 0.6
PRESETS = {
    "general": {"rho": 0.8, "p": PAPER_P},
    "hallucination": {"rho": 0.5, "p": PAPER_P},
    "vision-centric": {"rho": 0.9, "p": PAPER_P},
}

# Layers 0 and 1 are never searched: the massive activation appears from layer 2 on
# (docs/method.md#sink-tokens-per-layer).
FIRST_SEARCHED_LAYER = 2


def removed_fraction(p: float, compat: str = "paper") -> float:
    """Fraction of sink attention moved away: the paper's p, or 1 - p for the released code (which keeps p)."""
    return p if compat == "paper" else 1.0 - p


def in_compat_meaning(paper_values: dict, compat: str) -> dict:
    """The paper's rho / p written as ``compat`` reads them: the released code's rho and p are 1 - the paper's."""
    if compat == "paper":
        return dict(paper_values)
    return {name: round(1.0 - value, 12) if name in ("rho", "p") else value for name, value in paper_values.items()}


@dataclass(frozen=True)
class VARConfig:
    """Every knob of VAR. The defaults are the paper's general setting (rho 0.8, p 0.6, tau 20 for 4096/5120-wide
    models: a narrower model needs its own tau, see ``vasink.find_sink_dims``)."""

    tau: float = 20.0  # phi threshold: a token is a sink when phi(x) > tau
    rho: float = 0.8  # head test: visual non-sink ratio r >= rho (paper); sink ratio <= rho (released code)
    p: float = 0.6  # fraction of sink attention removed (paper); kept (released code)
    min_visual_attention: float = 0.2  # head test: visual mass m_V >= this
    sink_dims: str | tuple[int, ...] = "auto"  # "auto" = the known table (docs/method.md), else explicit dims
    layers: tuple[int, ...] | None = None  # layers VAR may modify; None = every layer >= 2
    except_last_layer: bool = True  # never modify the last decoder layer (paper); ignored by released-code
    compat: str = "paper"  # "paper" or "released-code"
    implementation: str = "fast"  # "fast" (no attention weights materialized) or "reference"
    skip_layers_without_visual_sink: bool = True  # a sample with no visual sink in a layer is untouched

    def __post_init__(self) -> None:
        _check_range("tau", self.tau, 0.0, float("inf"), low_open=True)
        _check_range("rho", self.rho, 0.0, 1.0)
        _check_range("p", self.p, 0.0, 1.0)
        _check_range("min_visual_attention", self.min_visual_attention, 0.0, 1.0)
        _check_choice("compat", self.compat, COMPAT_MODES)
        _check_choice("implementation", self.implementation, IMPLEMENTATIONS)
        object.__setattr__(self, "sink_dims", _normalize_sink_dims(self.sink_dims))
        object.__setattr__(self, "layers", _normalize_layers(self.layers))

    @classmethod
    def preset(cls, name: str, **overrides) -> "VARConfig":
        """The paper's task presets: "general" (rho 0.8), "hallucination" (0.5), "vision-centric" (0.9), each with
        p 0.6. With ``compat="released-code"`` they are written in the code's meaning (rho 0.2 / 0.5 / 0.1, p 0.4);
        the other ``overrides`` are taken as written, in the config's own meaning."""
        return cls(compat=overrides.pop("compat", "paper")).with_preset(name, **overrides)

    def with_preset(self, name: str | None, **overrides) -> "VARConfig":
        """This config with preset ``name``'s rho and p (None: no preset), in the meaning of the config's compat mode,
        then the ``overrides`` that are not None on top, as written (command-line flags left unset)."""
        if name is not None and name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        preset = in_compat_meaning(PRESETS[name], given.get("compat", self.compat)) if name else {}
        return self.replace(**{**preset, **given})

    def replace(self, **changes) -> "VARConfig":
        return dataclasses.replace(self, **changes)

    @property
    def removed_fraction(self) -> float:
        """Fraction of each selected row's sink attention that VAR moves to non-sink visual tokens."""
        return removed_fraction(self.p, self.compat)

    def modified_layers(self, num_layers: int) -> tuple[int, ...]:
        """Decoder layers whose attention VAR may change, for a model with ``num_layers`` layers."""
        candidates = self.layers if self.layers is not None else range(FIRST_SEARCHED_LAYER, num_layers)
        out_of_range = [layer for layer in candidates if layer >= num_layers]
        if out_of_range:
            raise ValueError(
                f"layers {out_of_range} out of range: the model has {num_layers} decoder layers (0..{num_layers - 1})"
            )
        # The released code never skips the last layer (a shadowed flag, docs/method.md#the-released-code).
        skip_last = self.except_last_layer and self.compat == "paper"
        return tuple(sorted(layer for layer in set(candidates) if not (skip_last and layer == num_layers - 1)))


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"VARConfig.{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"VARConfig.{name}={value!r} is out of range; valid range is {bracket}{low}, {high}]")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"VARConfig.{name}={value!r} is not valid; choose one of {list(choices)}")


def _normalize_sink_dims(sink_dims) -> str | tuple[int, ...]:
    if isinstance(sink_dims, str):
        if sink_dims != "auto":
            raise ValueError(f"VARConfig.sink_dims={sink_dims!r}: use 'auto' or a list of hidden-dimension indices")
        return sink_dims
    dims = tuple(int(d) for d in sink_dims)
    if not dims or any(d < 0 for d in dims):
        raise ValueError(f"VARConfig.sink_dims={sink_dims!r}: need a non-empty list of indices >= 0, or 'auto'")
    return tuple(sorted(set(dims)))


def _normalize_layers(layers) -> tuple[int, ...] | None:
    if layers is None:
        return None
    out = tuple(int(layer) for layer in layers)
    if not out or any(layer < 0 for layer in out):
        raise ValueError(f"VARConfig.layers={layers!r}: need None or a non-empty list of layer indices >= 0")
    return out
