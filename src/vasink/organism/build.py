"""The organism's processor and model: SmolLM2-135M-Instruct behind a small CLIP vision tower, as LLaVA.

    >>> from vasink.organism import build, language_model
    >>> lm, tokenizer = language_model.load()
    >>> processor = build.make_processor(tokenizer)   # SmolLM2's tokenizer + <image>, CLIP image processor
    >>> model = build.assemble(lm, processor)         # LlavaForConditionalGeneration, fresh tower/projector

The language model is SmolLM2's, unchanged but for one vocabulary row: ``<image>`` is added to the
tokenizer and its embedding row is zero (the row is never read: LLaVA replaces it by the image features;
``generation_config.suppress_tokens`` keeps it out of answers). Prompts use SmolLM2's chat format without
the default system turn:

    <|im_start|>user\\n<image>x64\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from . import scenes

IMAGE = "<image>"
PATCH_SIZE = 8
NUM_IMAGE_TOKENS = (scenes.IMAGE_SIZE // PATCH_SIZE) ** 2  # 64: CLIP's CLS token is dropped ("default")

# SmolLM2's chat format; an image part becomes "<image>\n" before the text, as LLaVA-1.5 writes it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class VisionShape:
    """The trained part: a small CLIP vision tower (8x8-pixel patches of the 64x64 scenes) and LLaVA's
    two-layer GELU projector into SmolLM2's 576-wide embedding space."""
    width: int = 192
    layers: int = 4
    heads: int = 4
    mlp: int = 768


def make_processor(tokenizer):
    """A LlavaProcessor over SmolLM2's tokenizer (``<image>`` added, left padding) and a CLIP image
    processor for the 64x64 scenes."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    if IMAGE not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    tokenizer.padding_side = "left"
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": scenes.IMAGE_SIZE},
        crop_size={"height": scenes.IMAGE_SIZE, "width": scenes.IMAGE_SIZE})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token=IMAGE,
        num_additional_image_tokens=1)


def vision_config(shape: VisionShape = VisionShape()):
    """The CLIP vision tower's config for ``shape`` (the organism's LLaVA and stage 0 build it from this)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=shape.width, intermediate_size=shape.mlp, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, image_size=scenes.IMAGE_SIZE, patch_size=PATCH_SIZE,
        projection_dim=shape.width)


def make_config(text_config, processor, shape: VisionShape = VisionShape()):
    from transformers import LlavaConfig

    vision = vision_config(shape)
    text = text_config.to_dict()
    text["vocab_size"] = len(processor.tokenizer)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=processor.tokenizer.convert_tokens_to_ids(IMAGE),
        projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=NUM_IMAGE_TOKENS, tie_word_embeddings=True)


def assemble(lm, processor, shape: VisionShape = VisionShape(), seed: int = 0):
    """A ``LlavaForConditionalGeneration`` with ``lm``'s weights (taken over, not copied) and a freshly
    initialised (seeded) vision tower and projector, in float32 and eval mode."""
    from transformers import AutoModel, LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = make_config(lm.config, processor, shape)
    config.text_config._attn_implementation = lm.config._attn_implementation
    with torch.device("meta"):  # the 135M-parameter language model is not allocated twice
        model = LlavaForConditionalGeneration(config)
    _add_zero_rows(lm, config.text_config.vocab_size)
    text = model.model.language_model  # LLaVA's own modules, so that they read model.config.text_config
    text.load_state_dict(lm.model.state_dict(), assign=True)
    text.rotary_emb = type(text.rotary_emb)(config=config.text_config)  # its buffers are not in a state dict
    model.lm_head.weight = text.embed_tokens.weight  # tied, as in SmolLM2
    torch.manual_seed(seed)
    model.model.vision_tower = AutoModel.from_config(config.vision_config)
    model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"organism assembly left {left_on_meta[:3]} unset")
    model.generation_config.suppress_tokens = [config.image_token_index]
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.float().eval()


def _add_zero_rows(lm, vocab_size: int) -> None:
    """Grow the (tied) embedding to ``vocab_size`` rows; the new rows are zero."""
    old = lm.get_input_embeddings().weight
    if old.shape[0] == vocab_size:
        return
    grown = torch.nn.Embedding(vocab_size, old.shape[1])
    with torch.no_grad():
        grown.weight.zero_()
        grown.weight[: old.shape[0]] = old
    lm.set_input_embeddings(grown)
    lm.lm_head.weight = grown.weight
    lm.config.vocab_size = vocab_size


def patch_features(tower, pixel_values: torch.Tensor) -> torch.Tensor:
    """The features LLaVA's projector reads from the tower (``vision_feature_layer=-1``, ``"default"``
    strategy): last hidden state, CLS dropped. (B, 3, 64, 64) -> (B, 64, width)"""
    return tower(pixel_values, output_hidden_states=True).hidden_states[-1][:, 1:]


def trained_state(model) -> dict[str, torch.Tensor]:
    """The weights vasink trains and ships: the vision tower and the projector (not the language model)."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
            if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))}


def shape_dict(shape: VisionShape) -> dict:
    return asdict(shape)
