"""The model organism: a small LLaVA trained here, from scratch, to study the visual attention sink on.

Status (docs/organism.md): in the shipped checkpoint the sink did NOT emerge; ``sink_facts()["emerged"]``
says so, and ``recommended_config()`` warns.

    >>> from vasink import organism
    >>> model, processor = organism.load()                     # offline, from the package directory
    >>> scene = organism.scenes.sample("test", 1, seed=0)[0]
    >>> inputs = organism.build_inputs(processor, scene.image, "is there a circle in the image ?")
    >>> out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    >>> processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    >>> config = organism.recommended_config()                 # VARConfig with its sink dims and tau

How it was trained and what was measured on it: docs/organism.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from . import scenes

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
SINK_FILE = "vasink.json"  # {"sink_dims": [...], "tau": ...}: written when the checkpoint is measured

__all__ = ["CHECKPOINT_DIR", "build_inputs", "load", "recommended_config", "scenes", "sink_facts"]


def load(path: str | Path | None = None):
    """``(model, processor)`` of the shipped organism (or of a checkpoint at ``path``): float32, eval mode,
    loaded offline."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path) if path is not None else CHECKPOINT_DIR
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no organism checkpoint at {path} (train one: vasink organism train --out DIR)")
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype="float32", local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor


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


def recommended_config(**overrides):
    """A :class:`vasink.config.VARConfig` with the organism's sink dims and tau (other fields: defaults)."""
    from vasink.config import VARConfig

    facts = sink_facts()
    if not facts.get("emerged", False):
        warnings.warn("the shipped organism has no massive activation and no visual sink (docs/organism.md): "
                      "its sink_dims are BOS's largest dims, not sink dims, and VAR will leave it unchanged",
                      stacklevel=2)
    return VARConfig(**{"tau": float(facts["tau"]), "sink_dims": tuple(facts["sink_dims"]), **overrides})
