"""VARConfig: every knob of sink detection and Visual Attention Redistribution, validated.

Defaults follow the paper (SPEC §2). ``compat="released-code"`` reads ``rho`` and ``p`` the way the
authors' released code does (SPEC §3): its ``rho`` bounds the visual *sink* ratio and its ``p`` is the
fraction of sink attention *kept*.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

COMPAT_MODES = ("paper", "released-code")
IMPLEMENTATIONS = ("fast", "reference")

# rho of the paper's three task presets (paper meaning: minimum visual non-sink ratio of a head).
PRESETS = {
    "general": {"rho": 0.8},
    "hallucination": {"rho": 0.5},
    "vision-centric": {"rho": 0.9},
}

# Layers 0 and 1 are never searched: the massive activation appears from layer 2 on (SPEC §2).
FIRST_SEARCHED_LAYER = 2


def removed_fraction(p: float, compat: str = "paper") -> float:
    """Fraction of sink attention moved away: the paper's p, or 1 - p for the released code (which keeps p)."""
    return p if compat == "paper" else 1.0 - p


@dataclass(frozen=True)
class VARConfig:
    tau: float = 20.0  # phi threshold: a token is a sink when phi(x) > tau
    rho: float = 0.5  # head test: visual non-sink ratio r >= rho (paper); sink ratio <= rho (released code)
    p: float = 0.6  # fraction of sink attention removed (paper); kept (released code)
    min_visual_attention: float = 0.2  # head test: visual mass m_V >= this
    sink_dims: str | tuple[int, ...] = "auto"  # "auto" = known table (SPEC §4), else explicit dims
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
        """The paper's task presets: "general" (rho 0.8), "hallucination" (0.5), "vision-centric" (0.9)."""
        return cls().with_preset(name).replace(**overrides)

    def with_preset(self, name: str | None, **overrides) -> "VARConfig":
        """This config with preset ``name``'s values (None: none), then the ``overrides`` that are not None on top
        (command-line flags left unset)."""
        if name is not None and name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return self.replace(**{**(PRESETS[name] if name else {}), **given})

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
        # The released code never skips the last layer (a shadowed flag, SPEC §3).
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
