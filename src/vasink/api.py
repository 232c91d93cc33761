"""Switch VAR on and off on a loaded transformers model, and detect its sinks.

    handle = vasink.enable(model, VARConfig.preset("general", sink_dims=(1415, 2533)))
    model.generate(**inputs)        # VAR on
    handle.disable()                # the model is exactly as loaded

    with vasink.var(model, config):
        model.generate(**inputs)
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from . import attention
from .config import VARConfig
from .peers.config import PEER_CONFIGS
from .models import adapter_for
from .sinks import LayerSinks, SinkReport, resolve_sink_dims, unreachable_tau
from .state import VARState, install_hooks

HANDLE_ATTR = "_vasink_handle"
SUPPORTED_BASE_IMPLEMENTATIONS = ("sdpa", "eager")


class VARHandle:
    """VAR switched on for one model; owns the per-call state and the hooks."""

    def __init__(self, model: nn.Module, config: VARConfig, intervention=None):
        self.model = model
        self.intervention = intervention
        self.adapter = adapter_for(model)
        text_config = self.adapter.text_config(model)
        self.original_implementation = text_config._attn_implementation
        if self.original_implementation not in SUPPORTED_BASE_IMPLEMENTATIONS:
            raise ValueError(
                f"VAR runs on models loaded with attn_implementation in {SUPPORTED_BASE_IMPLEMENTATIONS}; this text "
                f"backbone uses {self.original_implementation!r}. Reload with attn_implementation='sdpa'."
            )
        softcap = getattr(text_config, "attn_logit_softcapping", None)
        if softcap is not None:  # Gemma 2 text (PaliGemma 2): the VAR paths compute plain softmax attention
            raise ValueError(
                f"this text backbone soft-caps attention logits (attn_logit_softcapping={softcap}), which vasink's "
                "attention paths do not implement; VAR would change the model beyond redistribution"
            )
        self._hooks: list = []
        self.state: VARState | None = None
        self.active = False
        self._attach(config)

    @property
    def config(self) -> VARConfig:
        return self.state.config

    def _sink_dims(self, config: VARConfig) -> tuple[int, ...]:
        """Validate ``config`` for this model (before anything changes) and resolve its sink dims."""
        if not isinstance(config, VARConfig):
            raise TypeError(f"config must be a vasink.VARConfig, got {type(config).__name__}")
        text_config = self.adapter.text_config(self.model)
        sink_dims = resolve_sink_dims(config.sink_dims, text_config)
        unreachable = unreachable_tau(config.tau, text_config.hidden_size)
        if unreachable:  # VAR would be a no-op on every prompt: a config error, not a run
            raise ValueError(f"VARConfig.{unreachable}")
        return sink_dims

    def _new_state(self, config: VARConfig, intervention) -> VARState:
        """The state of ``config`` on this model: every check of the config (sink dims, tau, layers) before anything
        changes."""
        return VARState(self.model, self.adapter, config, self._sink_dims(config),
                        original_implementation=self.original_implementation, intervention=intervention)

    def _attach(self, config: VARConfig, state: VARState | None = None) -> None:
        state = state if state is not None else self._new_state(config, self.intervention)
        self.state = state
        self._hooks = install_hooks(self.model, self.adapter, state)
        for module in self.adapter.attention_modules(self.model):
            setattr(module, attention.STATE_ATTR, state)
        attention.register()
        self.adapter.set_text_attention(self.model, attention.ATTENTION_NAME)
        self.active = True
        setattr(self.model, HANDLE_ATTR, self)  # the model's active handle, for enable / disable / var

    def _detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        for module in self.adapter.attention_modules(self.model):
            if hasattr(module, attention.STATE_ATTR):
                delattr(module, attention.STATE_ATTR)
        self.adapter.set_text_attention(self.model, self.original_implementation)
        self.active = False
        if getattr(self.model, HANDLE_ATTR, None) is self:
            delattr(self.model, HANDLE_ATTR)

    def reconfigure(self, config: VARConfig, intervention=None) -> "VARHandle":
        """VAR with ``config`` through this handle (switched on again if it was off); whatever else is on the model
        (a peer method, another handle) is switched off first. A bad config raises with the model as it was."""
        state = self._new_state(config, intervention)
        current = getattr(self.model, HANDLE_ATTR, None)
        if current is not None and current is not self and current.active:
            current.disable()
        if self.active:
            self._detach()
        self.intervention = intervention
        self._attach(config, state)
        return self

    def disable(self) -> None:
        """Restore the model's original attention implementation and remove every hook."""
        if self.active:
            self._detach()

    def last_sinks(self) -> dict[int, torch.Tensor]:
        """Sink masks (B, T) per modified layer found at the last prefill."""
        return dict(self.state.sinks)

    def __repr__(self) -> str:
        return f"VARHandle({type(self.model).__name__}, active={self.active}, config={self.state.config})"


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile(model)``'s wrapper: its hooks and attention run inside the compiled call."""
    return getattr(model, "_orig_mod", model)


def enable(model: nn.Module, config: VARConfig | None = None, *, intervention=None):
    """Switch VAR on for ``model`` (enabling again replaces the config); returns the handle.

    A config VAR cannot run with is a ValueError and leaves the model as it was: sink dims out of range or
    unknown for the model, or a tau no token can exceed (phi <= sqrt(hidden_size); see ``find_sink_dims``).

    ``config`` may also be one of VAR's peers, ``vasink.PAIConfig``, ``vasink.VAFConfig`` or ``vasink.VCDConfig``
    (docs/peers.md): the handle is then a ``PeerHandle``, and the method replaces whatever was on.

    ``intervention`` (analysis): a rule ``(weights, plan, config, layer) -> weights`` applied on the reference
    path in place of VAR, in the layers and on the rows VAR would consider (see ``vasink.analysis``).
    """
    config = config if config is not None else VARConfig()
    model = unwrap_compiled(model)
    existing = getattr(model, HANDLE_ATTR, None)
    existing = existing if existing is not None and existing.active else None
    if isinstance(config, PEER_CONFIGS):
        from .peers.handle import PeerHandle

        if intervention is not None:
            raise ValueError(f"intervention is VAR's analysis rule; {type(config).__name__} takes none")
        # checks the config; the model is not changed yet
        handle = PeerHandle(model, config, HANDLE_ATTR, getattr(existing, "original_implementation", None))
        if existing is not None:
            existing.disable()
        return handle.attach()
    if isinstance(existing, VARHandle):
        return existing.reconfigure(config, intervention)
    if existing is not None:  # a peer method is on: VAR replaces it (and a bad VAR config puts it back)
        existing.disable()
        try:
            return VARHandle(model, config, intervention)
        except Exception:
            existing.attach()  # the same handle, on again
            raise
    return VARHandle(model, config, intervention)


def disable(model: nn.Module) -> None:
    """Switch VAR off for ``model``; a no-op when it is not on."""
    handle = getattr(unwrap_compiled(model), HANDLE_ATTR, None)
    if handle is not None:
        handle.disable()


@contextmanager
def var(model: nn.Module, config: VARConfig | None = None, *, intervention=None) -> Iterator[VARHandle]:
    """``with vasink.var(model, config): ...`` runs the block with VAR (or the peer method ``config`` names) on
    and restores the model after."""
    previous = getattr(unwrap_compiled(model), HANDLE_ATTR, None)
    previous = previous if previous is not None and previous.active else None
    restore = (previous.config, previous.intervention) if isinstance(previous, VARHandle) else None
    handle = enable(model, config, intervention=intervention)
    try:
        yield handle
    finally:
        # the model's handle now: a nested block that switched methods leaves a new one (peers' handles are new
        # objects), the same one when it reconfigured VAR
        current = getattr(unwrap_compiled(model), HANDLE_ATTR, None)
        if current is None or not current.active:
            pass  # the block switched VAR off itself: leave it off
        elif previous is None:
            current.disable()
        else:  # the handle that was on before, itself again (its owner's handle.disable() still works)
            _switch_back(previous, restore, current)


def _switch_back(previous, restore, current) -> None:
    """``previous`` on again, as it was (VAR: ``restore`` = its config and intervention), ``current`` off."""
    if isinstance(previous, VARHandle):
        previous.reconfigure(*restore)  # switches ``current`` off when it is another handle
        return
    if current is not previous and current.active:
        current.disable()
    if not previous.active:
        previous.attach()


@contextmanager
def model_as_loaded(model: nn.Module) -> Iterator[None]:
    """The block runs the model as loaded: whatever method is on (VAR, a peer) is switched off, and on again after
    (the same handle, the same config)."""
    model = unwrap_compiled(model)
    handle = getattr(model, HANDLE_ATTR, None)
    if handle is None or not handle.active:
        yield
        return
    restore = (handle.config, handle.intervention) if isinstance(handle, VARHandle) else None
    handle.disable()
    try:
        yield
    finally:
        _switch_back(handle, restore, handle)


@torch.no_grad()
def detect_sinks(model: nn.Module, inputs, config: VARConfig | None = None) -> SinkReport:
    """Run one forward of ``inputs`` and report, per decoder layer, phi of every token and the sinks.

    ``inputs``: the model's keyword inputs (a processor's BatchFeature or a dict with input_ids ...).
    """
    config = config if config is not None else VARConfig()
    model = unwrap_compiled(model)
    adapter = adapter_for(model)
    text_config = adapter.text_config(model)
    sink_dims = resolve_sink_dims(config.sink_dims, text_config)
    unreachable = unreachable_tau(config.tau, text_config.hidden_size)
    if unreachable:  # phi is still reported; the sink masks will be empty
        warnings.warn(f"VARConfig.{unreachable}", stacklevel=2)
    state = VARState(model, adapter, config, sink_dims, record_phi=True)
    with model_as_loaded(model):  # phi of the model as loaded, whatever method is on
        hooks = install_hooks(model, adapter, state)
        try:
            model(**inputs)
        finally:
            for hook in hooks:
                hook.remove()
    report = SinkReport(sink_dims=sink_dims, tau=config.tau)
    for layer, phi in sorted(state.phi.items()):
        report.layers[layer] = LayerSinks(layer, phi, state.sinks[layer], state.visual_keys)
    return report
