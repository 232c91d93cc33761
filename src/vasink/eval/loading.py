"""Load the model to evaluate: ``organism`` (the shipped model) or a local path / hub id of a model class
vasink supports (``vasink.supported_model_classes()``), with its processor and its base VAR config."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    name: str
    var_config: Any  # vasink.VARConfig with the model's sink dims and tau (other fields: defaults), or None
    var_config_missing: str = ""  # why var_config is None (VAR arms then need --sink-dims and --tau)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> str:
        """The weights' precision, e.g. "float32" (what run.json records: answers depend on it)."""
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")


def default_device() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def check_model_spec(spec: str) -> None:
    """A model that cannot be found says so in one line: a folder that does not exist, or a hub id that is
    not in the local cache while offline (``HF_HUB_OFFLINE=1``). Online, a hub id is left to the download."""
    import os
    from pathlib import Path

    path = Path(spec).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in ("config.json", "organism.json")):
            raise FileNotFoundError(f"--model {spec}: the folder has no config.json (not a saved Hugging Face model) "
                                    f"and no organism.json (not a vasink organism train run)")
        return
    if path.exists():
        raise FileNotFoundError(f"--model {spec}: this is a file; pass a model folder (with config.json) or a hub id")
    parts = spec.split("/")
    looks_like_hub_id = (len(parts) <= 2 and all(parts) and not spec.startswith((".", "~"))
                         and not any(p in (".", "..") for p in parts))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"--model {spec}: the folder {path} does not exist")
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline and not _in_hub_cache(spec):
        raise FileNotFoundError(f"--model {spec}: no such folder here, and the hub model {spec!r} is not in the local "
                                f"Hugging Face cache (HF_HUB_OFFLINE is set, so nothing is downloaded)")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # an old huggingface_hub: let transformers decide
        return True
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id either
        return False


def load_model(spec: str = "organism", device: str | None = None, dtype: str | None = None) -> LoadedModel:
    from ..config import VARConfig

    if dtype not in (None, *DTYPES):
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = device or default_device()
    from pathlib import Path

    exported_organism = Path(spec, "organism.json").is_file()  # a run of `vasink organism train`
    import torch

    if spec == "organism" or exported_organism:
        from .. import organism

        folder = spec if exported_organism else None  # an export's own sink facts, never the shipped model's
        model, processor = organism.load(folder)
        if dtype is not None:
            model = model.to(getattr(torch, dtype))
        try:
            return LoadedModel(model.to(device), processor, spec, organism.recommended_config(folder))
        except FileNotFoundError as error:  # weights there, sink facts not measured yet
            how = (f"; measure them with `python -m vasink.organism.measure --ckpt {spec} --out {spec}/measured.json "
                   f"--facts {spec}/vasink.json`" if folder else "")
            return LoadedModel(model.to(device), processor, spec, None, f"{error}{how}")

    import transformers
    from transformers import AutoConfig, AutoProcessor

    from ..models import UnsupportedModelError, supported_model_classes

    check_model_spec(spec)
    try:
        model_config = AutoConfig.from_pretrained(spec)
    except OSError as error:  # not a local folder, and not on the hub (or no network)
        raise FileNotFoundError(f"cannot load model {spec!r}: {error}") from None
    architectures = getattr(model_config, "architectures", None) or []
    supported = supported_model_classes()
    cls_name = next((a for a in architectures if a in supported), None)
    if cls_name is None:
        raise UnsupportedModelError(f"{spec}: model class {architectures or '(none in config.json)'} is not supported "
                                    f"by vasink; supported: {', '.join(supported)}")
    torch_dtype = dtype or ("float16" if str(device).startswith("cuda") else "float32")
    load_kwargs = {"dtype": getattr(torch, torch_dtype), "attn_implementation": "sdpa"}
    if importlib.util.find_spec("accelerate") is not None:  # weights go straight to the device, not via CPU RAM
        load_kwargs["device_map"] = str(device)
    model = getattr(transformers, cls_name).from_pretrained(spec, **load_kwargs)
    if "device_map" not in load_kwargs:
        model = model.to(device)
    processor = AutoProcessor.from_pretrained(spec)
    processor.tokenizer.padding_side = "left"
    return LoadedModel(model.eval(), processor, spec, VARConfig())
