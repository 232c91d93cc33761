"""The organism's tokenizer, processor, chat template and model config (everything but the weights).

    >>> from vasink.organism.build import make_processor, make_config
    >>> processor = make_processor()            # word-level tokenizer + CLIP image processor (PIL)
    >>> config = make_config(processor)         # a small LlavaConfig

The tokenizer is word-level (``tokenizers.models.WordLevel``) over the closed vocabulary of the scenes,
with ``<s>`` added at the front, so a question round-trips through encode/decode word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                          LlavaProcessor, PreTrainedTokenizerFast)

from . import scenes

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIALS = (PAD, BOS, EOS, UNK, IMAGE)
USER, ASSISTANT = "USER:", "ASSISTANT:"
PATCH_SIZE = 8
NUM_IMAGE_TOKENS = (scenes.IMAGE_SIZE // PATCH_SIZE) ** 2  # 64: CLIP's CLS token is dropped ("default")

# One user turn: "USER: <image>\n{question} "; one assistant turn: "ASSISTANT: {answer} </s> ".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %} </s> "
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def vocabulary() -> list[str]:
    """Every word the scenes, questions, answers and descriptions use, after the special tokens."""
    words = {USER, ASSISTANT, "?", ".", ",", "a", "the", "is", "there", "in", "image", "what", "color",
             "how", "many", "objects", "are", "left", "of", "above", "describe", "and", "yes", "no",
             "at", "top", "middle", "bottom", "right", "center"}
    words |= set(scenes.SHAPES) | set(scenes.COLORS) | set(scenes.NUMBER_WORDS)
    return list(SPECIALS) + sorted(words)


def make_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, padding_side="left", model_max_length=256)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE]})
    return tokenizer


def make_processor() -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": scenes.IMAGE_SIZE},
        crop_size={"height": scenes.IMAGE_SIZE, "width": scenes.IMAGE_SIZE})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=make_tokenizer(), patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE, image_token=IMAGE,
        num_additional_image_tokens=1)


@dataclass
class Shape:
    """Model size. The text width sets how "massive" a massive activation can be: phi <= sqrt(width)."""
    text_width: int = 128      # hidden size of the Llama backbone (sqrt = 11.3)
    text_layers: int = 4
    text_heads: int = 2        # head dim 64
    text_mlp: int = 512        # SwiGLU intermediate size
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp: int = 256


def make_config(processor: LlavaProcessor, shape: Shape = Shape()) -> LlavaConfig:
    tok = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=shape.vision_width, intermediate_size=shape.vision_mlp,
        num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
        image_size=scenes.IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=shape.vision_width)
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=shape.text_width, intermediate_size=shape.text_mlp,
        num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads, max_position_embeddings=256, rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids(IMAGE),
        projector_hidden_act="gelu", vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=NUM_IMAGE_TOKENS, tie_word_embeddings=False)
