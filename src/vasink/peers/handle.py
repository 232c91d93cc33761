"""PeerHandle: PAI, VAF or VCD switched on for one model (what ``vasink.enable`` returns for their configs)."""

from __future__ import annotations

import functools

from torch import nn

from ..models import adapter_for
from . import attention
from .config import PEER_CONFIGS, PAIConfig, VCDConfig
from .contrast import ContrastPass

SUPPORTED_BASE_IMPLEMENTATIONS = ("sdpa", "eager")
_UNSET = object()


class PeerHandle:
    """One peer method on one model: its attention state and hooks, its second pass. ``disable()`` restores the
    model exactly as loaded."""

    intervention = None  # VARHandle's analysis rule; peers take none

    def __init__(self, model: nn.Module, config, handle_attr: str, original_implementation: str | None = None):
        """``original_implementation``: the model's own attention, when another vasink handle has replaced it."""
        self.model, self.handle_attr = model, handle_attr
        self.adapter = adapter_for(model)
        self.original_implementation = original_implementation or self.adapter.text_config(model)._attn_implementation
        self.check(config)
        self.config = config
        self.state: attention.PeerState | None = None
        self.contrast: ContrastPass | None = None
        self._hooks: list = []
        self._modalities = _UNSET  # the model's own input_modalities attribute, while VCD shadows it
        self._generate = _UNSET  # the model's own generate instance attribute, while a second pass shadows it
        self.active = False

    def check(self, config) -> None:
        """Raise (changing nothing) when ``config`` cannot run on this model."""
        if not isinstance(config, PEER_CONFIGS):
            raise TypeError(f"config must be one of {[c.__name__ for c in PEER_CONFIGS]}, got {type(config).__name__}")
        config.modified_layers(len(self.adapter.decoder_layers(self.model)))  # layers out of range raise
        if not config.edits_attention:
            return
        if self.original_implementation not in SUPPORTED_BASE_IMPLEMENTATIONS:
            raise ValueError(f"{config.method.upper()} runs on models loaded with attn_implementation in "
                             f"{SUPPORTED_BASE_IMPLEMENTATIONS}; this text backbone uses "
                             f"{self.original_implementation!r}. Reload with attn_implementation='sdpa'.")
        softcap = getattr(self.adapter.text_config(self.model), "attn_logit_softcapping", None)
        if softcap is not None:
            raise ValueError(f"this text backbone soft-caps attention logits (attn_logit_softcapping={softcap}), "
                             f"which {config.method.upper()}'s attention path does not implement")

    def attach(self) -> "PeerHandle":
        model, config = self.model, self.config
        if config.edits_attention:
            self.state = attention.PeerState(model, self.adapter, config, self.original_implementation)
            self._hooks += self.state.guard.install(model)
            self._hooks.append(model.register_forward_pre_hook(self.state.on_model_call, with_kwargs=True))
            for module in self.adapter.attention_modules(model):
                setattr(module, attention.STATE_ATTR, self.state)
            attention.register()
            self.adapter.set_text_attention(model, attention.ATTENTION_NAME)
        if isinstance(config, VCDConfig):
            # generate() encodes images before the prefill for models that take mm_encoder_outputs; VCD noises the
            # pixels, so while it is on the model declares text input only and gets its pixels at the prefill.
            self._modalities = model.__dict__.get("input_modalities", _UNSET)
            model.input_modalities = ("text",)
        if config.contrasts_logits:
            self.contrast = ContrastPass(model, self.adapter, config, peer_state=self.state)
            self._hooks.append(model.register_forward_pre_hook(self.contrast.on_model_call, with_kwargs=True))
            self._hooks.append(model.register_forward_hook(self.contrast.on_model_output, with_kwargs=True))
            # the second pass's cache is not reordered with beams: generate refuses beam search while it is on
            self._generate = model.__dict__.get("generate", _UNSET)
            model.generate = refusing_beams(model, model.generate, config)
        self.active = True
        setattr(model, self.handle_attr, self)
        return self

    def disable(self) -> None:
        """Remove every hook and restore the model's attention implementation."""
        if not self.active:
            return
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self.state is not None:
            for module in self.adapter.attention_modules(self.model):
                if hasattr(module, attention.STATE_ATTR):
                    delattr(module, attention.STATE_ATTR)
            self.adapter.set_text_attention(self.model, self.original_implementation)
        if self._modalities is not _UNSET:
            self.model.input_modalities = self._modalities
        elif "input_modalities" in self.model.__dict__:
            del self.model.input_modalities
        if self._generate is not _UNSET:
            self.model.generate = self._generate
        elif self.contrast is not None and "generate" in self.model.__dict__:
            del self.model.generate
        self.active = False
        if getattr(self.model, self.handle_attr, None) is self:
            delattr(self.model, self.handle_attr)

    def __repr__(self) -> str:
        return f"PeerHandle({type(self.model).__name__}, active={self.active}, config={self.config})"


def requested_beams(model: nn.Module, args: tuple, kwargs: dict) -> int:
    """The ``num_beams`` a ``generate(*args, **kwargs)`` call asks for: the keyword, else its generation config
    (keyword or second positional argument), else the model's."""
    if kwargs.get("num_beams") is not None:
        return int(kwargs["num_beams"])
    config = kwargs.get("generation_config", args[1] if len(args) > 1 else None)
    for source in (config, getattr(model, "generation_config", None)):
        if getattr(source, "num_beams", None) is not None:
            return int(source.num_beams)
    return 1


def refusing_beams(model: nn.Module, generate, config):
    """``generate`` that raises before anything runs when the call asks for beam search (PAI's guidance and
    VCD's contrast keep a second cache that beam search would not reorder: answers would mix beams)."""

    @functools.wraps(generate)
    def generate_without_beams(*args, **kwargs):
        beams = requested_beams(model, args, kwargs)
        if beams > 1:
            method = config.method.upper()
            what = "PAI's guidance (gamma != 1)" if isinstance(config, PAIConfig) else "VCD's contrast"
            raise ValueError(f"{what} does not support beam search (num_beams={beams}): its second pass keeps a "
                             f"cache of its own that generate does not reorder with the beams. Generate with "
                             f"num_beams=1, greedy (do_sample=False) or sampling (do_sample=True), with {method} on; "
                             f"VAR, VAF and PAI with gamma=1 (its attention edit alone) add no second pass and run with beams "
                             f"(docs/peers.md#using-them)")
        return generate(*args, **kwargs)

    return generate_without_beams
