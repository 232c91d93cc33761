"""Tiny random-weight LLaVA models built from configs (no download), and a sink planter."""

from __future__ import annotations

import os

_DEVICE_NAME = os.environ.get("VASINK_TEST_DEVICE", "cpu")
if _DEVICE_NAME == "cpu":  # the GPU kernel (Triton) runs in Triton's interpreter; set before anything imports Triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

IMAGE_TOKEN = 99
PAD = 0
BOS = 1
HIDDEN = 64

# Where the model tests run: cpu by default; VASINK_TEST_DEVICE=cuda runs the model tests on a GPU.
DEVICE = torch.device(_DEVICE_NAME)
# Tiny models: one thread is faster than two, and immune to OpenMP stalls on a shared machine.
torch.set_num_threads(1)
SINK_DIMS = (5, 40)


def tiny_llava(num_layers: int = 5, image_size: int = 28, attn_implementation: str = "sdpa", seed: int = 0,
               kv_heads: int = 2) -> LlavaForConditionalGeneration:
    """CLIP tower (patch 7) + Llama text (hidden 64, 4 query heads, GQA), float32, eval mode."""
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=image_size, patch_size=7)
    text = LlamaConfig(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=num_layers, num_attention_heads=4,
                       num_key_value_heads=kv_heads, vocab_size=100, pad_token_id=PAD, bos_token_id=BOS,
                       eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMAGE_TOKEN,
                         vision_feature_select_strategy="default", pad_token_id=PAD)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn_implementation)
    model.generation_config.pad_token_id = PAD
    return model.to(DEVICE)


def num_patches(image_size: int = 28) -> int:
    return (image_size // 7) ** 2


def prompt_ids(prefix=(BOS, 5), suffix=(7, 8, 9, 10), images: int = 1, image_size: int = 28) -> list[int]:
    ids = list(prefix)
    for i in range(images):
        ids += [IMAGE_TOKEN] * num_patches(image_size)
        if i < images - 1:
            ids += [11, 12]
    return ids + list(suffix)


def batch_inputs(prompts: list[list[int]], image_size: int = 28, seed: int = 1) -> dict:
    """Left-padded batch; one random image per image-token block."""
    length = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, length - len(ids):] = torch.tensor(ids)
        attention_mask[row, length - len(ids):] = 1
    n_images = sum(p.count(IMAGE_TOKEN) for p in prompts) // num_patches(image_size)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if n_images:
        generator = torch.Generator().manual_seed(seed)
        inputs["pixel_values"] = torch.randn(n_images, 3, image_size, image_size, generator=generator)
    return to_device(inputs)


def to_device(value):
    """Tensors (also inside dicts and lists) moved to the test device."""
    if isinstance(value, torch.Tensor):
        return value.to(DEVICE)
    if isinstance(value, dict):
        return {k: to_device(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v) for v in value]
    return value


class SinkPlanter:
    """Adds a massive value in ``dims`` to the output of decoder layer 1 at chosen tokens.

    Planted tokens: the first real token (a BOS-like text sink) and the ``patches``-th image tokens
    of each image. From layer 2 on, the residual stream carries the planted values.
    """

    def __init__(self, model, patches=(2, 9), dims=SINK_DIMS, magnitude: float = 5.0, plant_bos: bool = True):
        self.patches, self.dims, self.magnitude, self.plant_bos = patches, dims, magnitude, plant_bos
        self.mask = None
        layers = model.model.language_model.layers
        self._hooks = [model.register_forward_pre_hook(self._on_model, with_kwargs=True),
                       layers[1].register_forward_hook(self._on_layer1)]

    def planted_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_image = input_ids == IMAGE_TOKEN
        mask = torch.zeros_like(is_image)
        # k-th token of each contiguous image block
        block_start = is_image & ~torch.nn.functional.pad(is_image, (1, 0))[:, :-1]
        block_id = block_start.long().cumsum(-1)
        for row in range(input_ids.shape[0]):
            for block in range(1, int(block_id[row].max()) + 1):
                positions = (is_image[row] & (block_id[row] == block)).nonzero().flatten()
                for k in self.patches:
                    if k < len(positions):
                        mask[row, positions[k]] = True
        if self.plant_bos:
            first_real = (input_ids != PAD).long().argmax(-1)
            mask[torch.arange(input_ids.shape[0]), first_real] = True
        return mask

    def _on_model(self, module, args, kwargs):
        input_ids = kwargs.get("input_ids")
        cache = kwargs.get("cache")
        if cache is None or cache.get_seq_length() == 0:
            self.mask = self.planted_mask(input_ids)
        else:
            self.mask = None  # decode step: planted values live in the cache

    def _on_layer1(self, module, args, output):
        if self.mask is None or output.shape[1] != self.mask.shape[1]:
            return output
        output = output.clone()
        for d in self.dims:
            output[..., d] = torch.where(self.mask, torch.full_like(output[..., d], self.magnitude), output[..., d])
        return output

    def remove(self):
        for hook in self._hooks:
            hook.remove()


@pytest.fixture
def model():
    return tiny_llava()


def tiny_processor(image_size: int = 28):
    """A LlavaProcessor with a word-level tokenizer whose ids fit tiny_llava (image token 99)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    named = ["<pad>", "<s>", "</s>", "<unk>", "user", ":", "assistant", "describe", "the", "image", ".", "what", "is",
             "in", "picture", "?", "there", "a", "person", "colour", "largest", "object"]
    words = named + [f"w{i}" for i in range(len(named), IMAGE_TOKEN)] + ["<image>"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", padding_side="left")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    template = ("<s>{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                "{% if add_generation_prompt %}assistant : {% endif %}")
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=7,
                          vision_feature_select_strategy="default", image_token="<image>", chat_template=template,
                          num_additional_image_tokens=1)


def force_fused_kernel(monkeypatch) -> list:
    """Route the fast path through the Triton kernel on the test device; returns a list that grows per call."""
    import vasink.attention as attention
    import vasink.fused_attention as fused

    monkeypatch.setattr(fused, "FUSED_DEVICES", (DEVICE.type,))
    calls = []
    original = fused.fused_var_attention
    monkeypatch.setattr(attention, "fused_var_attention", lambda *a: calls.append(1) or original(*a))
    return calls


@pytest.fixture
def planted():
    """A tiny LLaVA with sinks planted (BOS and image patches), removed after the test."""
    model = tiny_llava()
    planter = SinkPlanter(model)
    yield model
    planter.remove()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: two intra-op threads spin against other jobs (100x slower).
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
