"""vasink: find the visual attention sink in multimodal LLMs and apply Visual Attention Redistribution (VAR)."""

from .api import VARHandle, detect_sinks, disable, enable, var
from .config import VARConfig
from .discovery import SinkDims, find_sink_dims
from .models import ModelAdapter, UnsupportedModelError, register_adapter, supported_model_classes
from .redistribute import redistribute
from .sinks import LayerSinks, SinkReport, sink_dimension_value

__version__ = "0.1.0"

__all__ = [
    "VARConfig",
    "VARHandle",
    "enable",
    "disable",
    "var",
    "sink_dimension_value",
    "redistribute",
    "find_sink_dims",
    "SinkDims",
    "detect_sinks",
    "SinkReport",
    "LayerSinks",
    "ModelAdapter",
    "register_adapter",
    "supported_model_classes",
    "UnsupportedModelError",
]
