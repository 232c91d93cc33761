"""PAIConfig, VAFConfig, VCDConfig: VAR's peers, each with its official code's defaults, validated.

Layer indices are 0-based, as in ``VARConfig``. ``layers=None`` takes the official layers of the 32-layer
LLaVA-1.5 scaled to the model's depth ``L`` (docs/peers.md#layers-on-other-depths): the official range
``[a, b)`` of 32 becomes ``[round(a * L / 32), round(b * L / 32))`` (halves round up; at least one layer).
PAI's ``[2, 32)`` is layers 2..31 on 32 layers, 2..27 on 28, 0..4 on 5; VAF's ``[9, 15)`` is 9..14 on 32,
8..12 on 28, 1 on 5.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

OFFICIAL_DEPTH = 32  # LLaVA-1.5-7B, the model every official range below was set on


def scaled_layers(official: tuple[int, int], num_layers: int) -> tuple[int, ...]:
    """The official half-open range ``[start, end)`` of 32 layers, scaled to ``num_layers``."""
    start, end = (math.floor(bound * num_layers / OFFICIAL_DEPTH + 0.5) for bound in official)
    start = min(start, num_layers - 1)
    return tuple(range(start, max(end, start + 1)))


class _PeerConfig:
    """What the three configs share: a name, layer validation, replace()."""

    method = ""
    official_layers: tuple[int, int] | None = None  # [start, end) on 32 layers; None: no attention change

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def modified_layers(self, num_layers: int) -> tuple[int, ...]:
        """Decoder layers whose attention this method changes, for a model with ``num_layers`` layers."""
        if self.official_layers is None:
            return ()
        layers = self.layers if self.layers is not None else scaled_layers(self.official_layers, num_layers)
        out_of_range = [layer for layer in layers if layer >= num_layers]
        if out_of_range:
            raise ValueError(f"{type(self).__name__}.layers {out_of_range} out of range: the model has {num_layers} "
                             f"decoder layers (0..{num_layers - 1})")
        return tuple(sorted(set(layers)))

    @property
    def edits_attention(self) -> bool:
        return self.official_layers is not None

    @property
    def contrasts_logits(self) -> bool:
        return False


@dataclass(frozen=True)
class PAIConfig(_PeerConfig):
    """PAI (Liu et al., ECCV 2024), LALBJ/PAI: image-key logits ``z + alpha*|z|`` on the last query row of each
    forward, then a classifier-free-guidance contrast with the same prompt without its image."""

    alpha: float = 0.2  # attention edit strength (official default and README); 0 turns the edit off
    gamma: float = 1.1  # guidance: gamma*(s - u) + u in log-probs (README runs 1.1; argparse default 2); 1 = off
    layers: tuple[int, ...] | None = None  # None: official 2..31 of 32, scaled to the model's depth
    cutoff: float = 0.1  # plausibility: tokens with p < cutoff * max p are dropped (hard-coded 0.1 officially)

    method = "pai"
    official_layers = (2, 32)

    def __post_init__(self) -> None:
        _check_range(self, "alpha", 0.0, math.inf)
        _check_range(self, "gamma", 1.0, math.inf)
        _check_range(self, "cutoff", 0.0, 1.0, low_open=True)
        object.__setattr__(self, "layers", _normalize_layers(self, self.layers))

    @property
    def contrasts_logits(self) -> bool:
        return self.gamma != 1.0


@dataclass(frozen=True)
class VAFConfig(_PeerConfig):
    """VAF / ClearSight (Yin et al., CVPR 2025), ustc-hyin/ClearSight: in the middle layers, image-key logits
    times ``image_scale`` and system-key logits times ``system_scale`` (signed, before the mask) for the text
    rows after the image (prefill) and every decoded row."""

    image_scale: float = 1.15  # enh_para of the official script
    system_scale: float = 0.95  # sup_para of the official script
    layers: tuple[int, ...] | None = None  # None: official 9..14 of 32, scaled to the model's depth

    method = "vaf"
    official_layers = (9, 15)

    def __post_init__(self) -> None:
        _check_range(self, "image_scale", 0.0, math.inf)
        _check_range(self, "system_scale", 0.0, math.inf)
        object.__setattr__(self, "layers", _normalize_layers(self, self.layers))


@dataclass(frozen=True)
class VCDConfig(_PeerConfig):
    """VCD (Leng et al., CVPR 2024), DAMO-NLP-SG/VCD: every generated token's logits contrasted with those of the
    same prompt over a diffusion-noised image, ``(1 + alpha) * l - alpha * l_noised``, plausibility ``beta``."""

    alpha: float = 1.0  # cd_alpha (argparse default and POPE script; the sampling function falls back to 0.5)
    beta: float = 0.1  # cd_beta (argparse default; the LLaVA POPE script uses 0.2)
    noise_step: int = 500  # diffusion step t of the 1000-step schedule
    seed: int | None = None  # noise generator seed; None: torch's global generator (as the official code)

    method = "vcd"

    def __post_init__(self) -> None:
        _check_range(self, "alpha", 0.0, math.inf)
        _check_range(self, "beta", 0.0, 1.0, low_open=True)
        if isinstance(self.noise_step, bool) or not isinstance(self.noise_step, int) \
                or not 0 <= self.noise_step < 1000:
            raise ValueError(f"VCDConfig.noise_step={self.noise_step!r} is out of range; valid: an int in [0, 999]")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"VCDConfig.seed={self.seed!r}: need None or an int")

    @property
    def contrasts_logits(self) -> bool:
        return True


PEER_CONFIGS = (PAIConfig, VAFConfig, VCDConfig)


def _check_range(config, name: str, low: float, high: float, low_open: bool = False) -> None:
    value = getattr(config, name)
    owner = type(config).__name__
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{owner}.{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{owner}.{name}={value!r} is out of range; valid range is {bracket}{low}, {high}]")


def _normalize_layers(config, layers) -> tuple[int, ...] | None:
    if layers is None:
        return None
    owner = type(config).__name__
    if isinstance(layers, (int, str)) or any(isinstance(layer, bool) or not isinstance(layer, int)
                                             for layer in layers):
        raise ValueError(f"{owner}.layers={layers!r}: need None or a list of 0-based layer indices (ints)")
    out = tuple(layers)
    if not out or any(layer < 0 for layer in out):
        raise ValueError(f"{owner}.layers={layers!r}: need None or a non-empty list of layer indices >= 0")
    return out
