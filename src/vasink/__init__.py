"""vasink: find the visual attention sink in multimodal LLMs and apply Visual Attention Redistribution (VAR).

Names are imported on first use (PEP 562), so ``import vasink`` and ``vasink --help`` do not pay for torch
and transformers; ``vasink.analysis``, ``vasink.eval``, ``vasink.organism`` and the other subpackages are
reachable as attributes after a bare ``import vasink``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "VARConfig": "config",
    "PAIConfig": "peers.config",
    "VAFConfig": "peers.config",
    "VCDConfig": "peers.config",
    "VARHandle": "api",
    "enable": "api",
    "disable": "api",
    "var": "api",
    "detect_sinks": "api",
    "sink_dimension_value": "sinks",
    "SinkReport": "sinks",
    "LayerSinks": "sinks",
    "redistribute": "redistribute",
    "find_sink_dims": "discovery",
    "SinkDims": "discovery",
    "ModelAdapter": "models",
    "register_adapter": "models",
    "supported_model_classes": "models",
    "UnsupportedModelError": "models",
}
_SUBPACKAGES = ("analysis", "eval", "organism", "models", "scoring", "cli", "peers")

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from .api import VARHandle, detect_sinks, disable, enable, var
    from .config import VARConfig
    from .discovery import SinkDims, find_sink_dims
    from .peers.config import PAIConfig, VAFConfig, VCDConfig
    from .models import ModelAdapter, UnsupportedModelError, register_adapter, supported_model_classes
    from .redistribute import redistribute
    from .sinks import LayerSinks, SinkReport, sink_dimension_value


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # once imported, a plain module attribute
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vasink' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))


class _Package(types.ModuleType):
    """Importing a submodule sets it as an attribute of its package; ``vasink.redistribute`` is the function
    of the same name (as ``from vasink import redistribute`` has always given), so that one is not replaced."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the module stays reachable as sys.modules["vasink.<name>"] and through its imports
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
