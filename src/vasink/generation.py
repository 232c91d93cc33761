"""Greedy answers from a loaded model: the one generate-and-decode every command uses."""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_answers(model, processor, inputs, max_new_tokens: int, logits_processor=None) -> list[str]:
    """One greedy answer per batch row of ``inputs`` (the processor's output, on the model's device), decoded
    without special tokens and stripped. Floating pixel values are cast to the model's dtype (a half-precision
    model gets the processor's float32 pixels). ``logits_processor``: run after generate's own (the eval's
    seeded sampler leaves one token for greedy search to take)."""
    inputs = dict(inputs)
    if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    tokenizer = getattr(processor, "tokenizer", processor)
    from transformers import LogitsProcessorList

    extra = {"logits_processor": LogitsProcessorList(logits_processor)} if logits_processor else {}
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                            pad_token_id=tokenizer.pad_token_id, **extra)
    new_tokens = output[:, inputs["input_ids"].shape[1]:]  # (B, new)
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
