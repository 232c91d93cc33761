"""phi (the sink-dimension value), the known sink dimensions, and per-layer sink detection."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

RMS_EPS = 1e-6


def sink_dimension_value(hidden_states: torch.Tensor, sink_dims: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """phi(x) = max_{d in sink_dims} |x[d]| / RMS(x), in float32.

    hidden_states: ``[batch, tokens, hidden]`` (or ``[tokens, hidden]``). Returns ``[batch, tokens]``.
    """
    index = sink_dims if isinstance(sink_dims, torch.Tensor) else sink_dim_index(sink_dims, hidden_states)
    hidden_size = hidden_states.shape[-1]
    # float32 accumulation without a float32 copy of the whole hidden state (a per-layer cost at prefill)
    squares = torch.linalg.vector_norm(hidden_states, dim=-1, dtype=torch.float32).pow(2)  # (B, T)
    rms = torch.sqrt(squares / hidden_size + RMS_EPS)
    return hidden_states.index_select(-1, index).float().abs().amax(-1) / rms


def sink_dim_index(sink_dims: Sequence[int], hidden_states: torch.Tensor) -> torch.Tensor:
    """``sink_dims`` checked against the hidden size, as an index tensor on the hidden states' device (callers
    that compute phi at every layer make it once)."""
    hidden_size = hidden_states.shape[-1]
    dims = list(sink_dims)
    if not dims:
        raise ValueError("sink_dims is empty: give at least one hidden dimension")
    bad = [d for d in dims if not 0 <= d < hidden_size]
    if bad:
        raise ValueError(f"sink_dims {bad} out of range for hidden size {hidden_size} (valid: 0..{hidden_size - 1})")
    return torch.tensor(dims, device=hidden_states.device)


def unreachable_tau(tau: float, hidden_size: int) -> str | None:
    """Why ``tau`` can never mark a sink on a model ``hidden_size`` wide (phi <= sqrt(hidden_size)), or None."""
    ceiling = math.sqrt(hidden_size)
    if tau < ceiling:
        return None
    return (f"tau={tau:g} can never be reached on this model: phi <= sqrt(hidden_size) = sqrt({hidden_size}) = "
            f"{ceiling:.2f}, so no token would be a sink and VAR would change nothing (tau 20 suits 4096/5120-wide "
            "models). Run found = vasink.find_sink_dims(model, processor) and pass "
            "VARConfig(sink_dims=found.dims, tau=found.suggested_tau)")


def dimension_ratios(hidden_states: torch.Tensor) -> torch.Tensor:
    """|x[d]| / RMS(x) for every dimension: ``[..., hidden]`` -> same shape, float32."""
    x = hidden_states.float()
    return x.abs() / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS)


@dataclass(frozen=True)
class KnownSinkDims:
    """A row of the known sink-dimension table (docs/method.md#known-sink-dimensions): a base LLM, matched on its
    text config."""

    name: str
    model_type: tuple[str, ...]
    hidden_size: int
    num_hidden_layers: int
    dims: tuple[int, ...]
    max_vocab_size: int | None = None  # tells LLaMA-2 (32k vocab) from LLaMA-3 (128k) at equal widths
    verified: bool = True

    def matches(self, text_config) -> bool:
        vocab = getattr(text_config, "vocab_size", None)
        return (
            getattr(text_config, "model_type", None) in self.model_type
            and text_config.hidden_size == self.hidden_size
            and text_config.num_hidden_layers == self.num_hidden_layers
            and (self.max_vocab_size is None or (vocab is not None and vocab <= self.max_vocab_size))
        )


KNOWN_SINK_DIMS: tuple[KnownSinkDims, ...] = (
    KnownSinkDims("LLaMA-2-7B / Vicuna-7B (LLaVA-1.5-7B)", ("llama",), 4096, 32, (1415, 2533), 33000),
    KnownSinkDims("LLaMA-2-13B / Vicuna-13B (LLaVA-1.5-13B, LLaVA-1.6-13B)", ("llama",), 5120, 40, (2100, 4743), 33000),
    KnownSinkDims("Qwen2-7B (Qwen2-VL-7B)", ("qwen2_vl", "qwen2_vl_text"), 3584, 28, (458, 2570)),  # not plain qwen2: InternVL3 is Qwen2.5
    KnownSinkDims("InternLM2 (InternVL2-8B)", ("internlm2",), 4096, 32, (3584,), verified=False),
)


def known_sink_dims(text_config) -> KnownSinkDims | None:
    for entry in KNOWN_SINK_DIMS:
        if entry.matches(text_config):
            return entry
    return None


def resolve_sink_dims(sink_dims, text_config) -> tuple[int, ...]:
    """Explicit dims are range-checked; "auto" looks the model up in the known table
    (docs/method.md#known-sink-dimensions)."""
    hidden_size = text_config.hidden_size
    if sink_dims == "auto":
        entry = known_sink_dims(text_config)
        if entry is None:
            raise ValueError(
                f"no known sink dimensions for this text model (model_type={getattr(text_config, 'model_type', None)!r}, "
                f"hidden_size={hidden_size}, layers={text_config.num_hidden_layers}); run "
                "vasink.find_sink_dims(model, processor) and pass VARConfig(sink_dims=found.dims, tau=found.suggested_tau)"
            )
        return entry.dims
    bad = [d for d in sink_dims if not 0 <= d < hidden_size]
    if bad:
        raise ValueError(
            f"VARConfig.sink_dims {bad} out of range for hidden size {hidden_size} (valid: 0..{hidden_size - 1})"
        )
    return tuple(sink_dims)


@dataclass
class LayerSinks:
    """Sinks of one decoder layer, found on the hidden states entering it during prefill."""

    layer: int
    phi: torch.Tensor  # (B, T) float32
    sink_mask: torch.Tensor  # (B, T) bool: phi > tau on a real (non-padding) token
    visual_mask: torch.Tensor  # (B, T) bool

    def sink_positions(self, batch_index: int = 0) -> list[int]:
        return self.sink_mask[batch_index].nonzero().flatten().tolist()

    def visual_sink_positions(self, batch_index: int = 0) -> list[int]:
        return (self.sink_mask & self.visual_mask)[batch_index].nonzero().flatten().tolist()

    def text_sink_positions(self, batch_index: int = 0) -> list[int]:
        return (self.sink_mask & ~self.visual_mask)[batch_index].nonzero().flatten().tolist()


@dataclass
class SinkReport:
    """Per decoder layer: phi of every token, the sink positions, and which of them are visual."""

    sink_dims: tuple[int, ...]
    tau: float
    layers: dict[int, LayerSinks] = field(default_factory=dict)

    def __getitem__(self, layer: int) -> LayerSinks:
        if layer not in self.layers:
            raise KeyError(f"layer {layer} not in the report; layers are {sorted(self.layers)}")
        return self.layers[layer]

    def visual_sink_fraction(self, layer: int, batch_index: int = 0) -> float:
        entry = self[layer]
        visual = entry.visual_mask[batch_index]
        count = int(visual.sum())
        return float((entry.sink_mask[batch_index] & visual).sum()) / count if count else 0.0

    def summary(self, batch_index: int = 0) -> str:
        lines = [f"sink dims {list(self.sink_dims)}, tau {self.tau:g}"]
        for layer, entry in sorted(self.layers.items()):
            lines.append(
                f"layer {layer:>3}: text sinks {entry.text_sink_positions(batch_index)}, "
                f"visual sinks {entry.visual_sink_positions(batch_index)}"
            )
        return "\n".join(lines)
