"""Tiny random models of every supported family, built from configs of the real transformers classes.

A prompt is a list of items: an int is a text token, :class:`Image` / :class:`Video` are visual inputs
whose placeholder tokens (and wrappers, breaks, newlines) each family lays out as its processor would.
Pixels come from the item's seed, so a prompt alone gets exactly the pixels it gets in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import vasink
from conftest import DEVICE, to_device

PAD, BOS, EOS = 0, 1, 2
IMAGE, VIDEO = 100, 101
EXTRA = 102  # first id of wrapper / break / timestamp tokens (text, not visual)
VOCAB = 120
HIDDEN = 64
SINK_DIMS = (5, 40)


@dataclass(frozen=True)
class Image:
    seed: int
    size: tuple[int, int] = (28, 28)  # (height, width) for families with native / anyres resolution


@dataclass(frozen=True)
class Video:
    seed: int
    frames: int = 2


def pixels(seed: int, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def text_kwargs(**overrides) -> dict:
    base = dict(hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=5, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                max_position_embeddings=512)
    return {**base, **overrides}


def finish(model, attn: str):
    model = model.eval()
    model.set_attn_implementation(attn)
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = None  # always generate the full length
    return model.to(DEVICE)


class Family:
    """How one family builds a tiny model and lays out a prompt's visual inputs."""

    name = ""
    has_video = False

    def build(self, attn: str = "sdpa", seed: int = 0):
        raise NotImplementedError

    def row(self, model, items) -> tuple[list[int], list[int], dict]:
        """(input_ids, token_type_ids, media) for one prompt; media: lists of per-item tensors by input key."""
        ids, types, media = [], [], {}
        for item in items:
            if isinstance(item, int):
                ids.append(item)
                types.append(0)
                continue
            item_ids, item_media = (self.image(model, item, items) if isinstance(item, Image)
                                    else self.video(model, item))
            ids += item_ids
            types += [1 if t == IMAGE else 2 if t == VIDEO else 0 for t in item_ids]
            for key, value in item_media.items():
                media.setdefault(key, []).append(value)
        return ids, types, media

    def image(self, model, item: Image, items) -> tuple[list[int], dict]:
        raise NotImplementedError

    def video(self, model, item: Video) -> tuple[list[int], dict]:
        raise NotImplementedError(f"{self.name} has no video input")

    def collate_media(self, rows_media: list[dict]) -> dict:
        """Default: every media key is concatenated over rows (dim 0)."""
        out = {}
        for key in {k for media in rows_media for k in media}:
            out[key] = torch.cat([v for media in rows_media for v in media.get(key, [])])
        return out

    def extra_inputs(self, token_types: torch.Tensor) -> dict:
        return {}

    def inputs(self, model, prompts: list[list]) -> dict:
        """Left-padded batch of ``prompts``."""
        rows = [self.row(model, items) for items in prompts]
        length = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((len(rows), length), PAD)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        token_types = torch.zeros((len(rows), length), dtype=torch.long)
        for r, (ids, types, _) in enumerate(rows):
            input_ids[r, length - len(ids):] = torch.tensor(ids)
            attention_mask[r, length - len(ids):] = 1
            token_types[r, length - len(ids):] = torch.tensor(types)
        out = {"input_ids": input_ids, "attention_mask": attention_mask}
        out.update(self.collate_media([media for _, _, media in rows]))
        out.update(self.extra_inputs(token_types))
        return to_device(out)

    def prompts(self) -> list[list]:
        """Prompts of the batch tests: one image; a longer prompt; several images (and a video)."""
        prompts = [
            [BOS, 5, Image(1), 7, 8, 9, 10],
            [BOS, 5, 6, 4, 3, Image(2, (28, 56)), 7, 8],
            [BOS, 5, Image(3), 11, 12, Image(4, (56, 28)), 7, 8, 9],
        ]
        if self.has_video:
            prompts.append([BOS, 5, Video(5), 7, 8, 9])
        return prompts


# -- LLaVA-NeXT and OneVision --------------------------------------------------------------------------


class LlavaNext(Family):
    name = "llava_next"
    pinpoints = [[28, 56], [56, 28], [56, 56]]

    def build(self, attn="sdpa", seed=0):
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=28, patch_size=7)
        config = LlavaNextConfig(vision_config=vision, text_config=LlamaConfig(**text_kwargs()),
                                 image_token_index=IMAGE, image_grid_pinpoints=self.pinpoints,
                                 vision_feature_select_strategy="default", vision_feature_layer=-1,
                                 projector_hidden_act="gelu")
        torch.manual_seed(seed)
        return finish(LlavaNextForConditionalGeneration(config), attn)

    def num_patches(self, size, items) -> int:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        return image_size_to_num_patches(size, self.pinpoints, 28)

    def image(self, model, item, items):
        pv = pixels(item.seed, self.num_patches(item.size, items), 3, 28, 28)
        sizes = torch.tensor([item.size])
        with torch.no_grad():  # the model's own count of placeholder tokens for this image
            feats = model.model.get_image_features(pixel_values=pv[None].to(DEVICE), image_sizes=sizes.to(DEVICE),
                                                   **self.feature_kwargs(items))
        tokens = feats.pooler_output[0].shape[0]
        return [IMAGE] * tokens, {"pixel_values": pv, "image_sizes": sizes}

    def feature_kwargs(self, items) -> dict:
        return {}

    def collate_media(self, rows_media):
        out = {}
        images = [pv for media in rows_media for pv in media.get("pixel_values", [])]
        if images:
            most = max(pv.shape[0] for pv in images)
            out["pixel_values"] = torch.stack([torch.cat([pv, pv.new_zeros(most - pv.shape[0], *pv.shape[1:])])
                                               for pv in images])
            out["image_sizes"] = torch.cat([s for media in rows_media for s in media.get("image_sizes", [])])
        return out


class LlavaOnevision(LlavaNext):
    name = "llava_onevision"
    has_video = True

    def build(self, attn="sdpa", seed=0):
        from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config,
                                  SiglipVisionConfig)

        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=7)
        config = LlavaOnevisionConfig(vision_config=vision, text_config=Qwen2Config(**text_kwargs()),
                                      image_token_index=IMAGE, video_token_index=VIDEO,
                                      image_grid_pinpoints=self.pinpoints, vision_feature_layer=-1,
                                      vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_1")
        torch.manual_seed(seed)
        return finish(LlavaOnevisionForConditionalGeneration(config), attn)

    @staticmethod
    def images_in(items) -> int:
        return sum(isinstance(i, Image) for i in items)

    def num_patches(self, size, items) -> int:
        # the model's rule: anyres tiles only for a prompt with one image
        return super().num_patches(size, items) if self.images_in(items) == 1 else 1

    def image(self, model, item, items):
        ids, media = super().image(model, item, items)
        media["batch_num_images"] = torch.tensor([1])
        return ids, media

    def feature_kwargs(self, items):
        return {"batch_num_images": torch.tensor([self.images_in(items)])}

    def row(self, model, items):
        ids, types, media = super().row(model, items)
        if "batch_num_images" in media:
            media["batch_num_images"] = [torch.tensor([len(media["batch_num_images"])])]
        return ids, types, media

    def video(self, model, item):
        pv = pixels(item.seed, 1, item.frames, 3, 28, 28)
        return [VIDEO] * (item.frames * 4 + 1), {"pixel_values_videos": pv}  # 2 x 2 pooled per frame + newline

    def collate_media(self, rows_media):
        out = super().collate_media(rows_media)
        if any("batch_num_images" in m for m in rows_media):
            out["batch_num_images"] = torch.cat([m["batch_num_images"][0] if "batch_num_images" in m
                                                 else torch.tensor([0]) for m in rows_media])
        videos = [v for m in rows_media for v in m.get("pixel_values_videos", [])]
        if videos:
            out["pixel_values_videos"] = torch.cat(videos)
        return out


# -- Qwen2-VL, Qwen2.5-VL, Qwen3-VL -------------------------------------------------------------------


class Qwen2VL(Family):
    name = "qwen2_vl"
    has_video = True
    patch, merge, temporal = 2, 2, 2
    vision_start, vision_end = EXTRA, EXTRA + 1

    def classes(self):
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        return Qwen2VLConfig, Qwen2VLForConditionalGeneration

    def vision_config(self) -> dict:
        return dict(depth=1, embed_dim=32, hidden_size=HIDDEN, num_heads=2, mlp_ratio=2, patch_size=self.patch,
                    spatial_merge_size=self.merge, temporal_patch_size=self.temporal)

    def text_config(self) -> dict:
        return text_kwargs(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                            "mrope_section": [2, 3, 3]})

    def build(self, attn="sdpa", seed=0):
        config_cls, model_cls = self.classes()
        config = config_cls(vision_config=self.vision_config(), text_config=self.text_config(),
                            image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=self.vision_start,
                            vision_end_token_id=self.vision_end)
        torch.manual_seed(seed)
        return finish(model_cls(config), attn)

    def extra_inputs(self, token_types):
        return {"mm_token_type_ids": token_types}  # 1 image, 2 video (set in row())

    def image(self, model, item, items):
        # 28 x 28 -> a 4 x 4 patch grid -> 2 x 2 tokens; 28 x 56 -> 2 x 4 tokens.
        h, w = item.size[0] // 7, item.size[1] // 7
        flat = pixels(item.seed, h * w, 3 * self.temporal * self.patch * self.patch)
        tokens = h * w // self.merge ** 2
        return ([self.vision_start] + [IMAGE] * tokens + [self.vision_end],
                {"pixel_values": flat, "image_grid_thw": torch.tensor([[1, h, w]])})

    def video(self, model, item):
        t, h, w = item.frames, 4, 4
        flat = pixels(item.seed, t * h * w, 3 * self.temporal * self.patch * self.patch)
        return ([self.vision_start] + [VIDEO] * (t * h * w // self.merge ** 2) + [self.vision_end],
                {"pixel_values_videos": flat, "video_grid_thw": torch.tensor([[t, h, w]])})


class Qwen25VL(Qwen2VL):
    name = "qwen2_5_vl"

    def classes(self):
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    def vision_config(self):
        return dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                    patch_size=self.patch, spatial_merge_size=self.merge, temporal_patch_size=self.temporal,
                    window_size=8, fullatt_block_indexes=[1])


class Qwen3VL(Qwen2VL):
    name = "qwen3_vl"

    def classes(self):
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        return Qwen3VLConfig, Qwen3VLForConditionalGeneration

    def vision_config(self):
        return dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                    patch_size=self.patch, spatial_merge_size=self.merge, temporal_patch_size=self.temporal,
                    num_position_embeddings=16, deepstack_visual_indexes=[0])

    def text_config(self):
        return text_kwargs(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                         "mrope_section": [2, 3, 3], "mrope_interleaved": True})

    def video(self, model, item):
        # Qwen3-VL's processor puts a timestamp and its own vision_start / vision_end around every frame.
        t, h, w = item.frames, 4, 4
        flat = pixels(item.seed, t * h * w, 3 * self.temporal * self.patch * self.patch)
        ids = []
        for frame in range(t):
            ids += [EXTRA + 2 + frame, self.vision_start] + [VIDEO] * (h * w // self.merge ** 2) + [self.vision_end]
        return ids, {"pixel_values_videos": flat, "video_grid_thw": torch.tensor([[t, h, w]])}


# -- InternVL, Idefics3, SmolVLM --------------------------------------------------------------------------


class InternVL(Family):
    name = "internvl"
    has_video = True
    img_start, img_end = EXTRA, EXTRA + 1

    def build(self, attn="sdpa", seed=0):
        from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config

        vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                      image_size=28, patch_size=7)
        config = InternVLConfig(vision_config=vision, text_config=Qwen2Config(**text_kwargs()), image_token_id=IMAGE,
                                downsample_ratio=0.5, vision_feature_layer=-1, image_seq_length=4)
        torch.manual_seed(seed)
        return finish(InternVLForConditionalGeneration(config), attn)

    def image(self, model, item, items):
        tiles = 1 + (item.size[0] // 28) * (item.size[1] // 28) if item.size != (28, 28) else 1  # tiles + thumbnail
        return ([self.img_start] + [IMAGE] * (4 * tiles) + [self.img_end],
                {"pixel_values": pixels(item.seed, tiles, 3, 28, 28)})

    def video(self, model, item):
        # InternVL's processor: "Frame1: <img>...</img>" per frame, one tile each, the image token.
        ids = []
        for frame in range(item.frames):
            ids += [EXTRA + 2 + frame, self.img_start] + [IMAGE] * 4 + [self.img_end]
        return ids, {"pixel_values": pixels(item.seed, item.frames, 3, 28, 28)}


class Idefics3(Family):
    name = "idefics3"
    fake, global_token = EXTRA, EXTRA + 1

    def classes(self):
        from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3VisionConfig

        return Idefics3Config, Idefics3ForConditionalGeneration, Idefics3VisionConfig

    def build(self, attn="sdpa", seed=0):
        from transformers import LlamaConfig

        config_cls, model_cls, vision_cls = self.classes()
        vision = vision_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            image_size=28, patch_size=7)
        config = config_cls(vision_config=vision, text_config=LlamaConfig(**text_kwargs()), image_token_id=IMAGE,
                            scale_factor=2)
        torch.manual_seed(seed)
        return finish(model_cls(config), attn)

    def image(self, model, item, items):
        # rows x cols tiles, each "<fake><row_r_col_c><image>*4", then "<fake><global-img><image>*4<fake>".
        rows, cols = item.size[0] // 28, item.size[1] // 28
        tiles = rows * cols if rows * cols > 1 else 0
        ids = []
        for t in range(tiles):
            ids += [self.fake, EXTRA + 2 + t] + [IMAGE] * 4
        ids += [self.fake, self.global_token] + [IMAGE] * 4 + [self.fake]
        return ids, {"pixel_values": pixels(item.seed, tiles + 1, 3, 28, 28)}

    def collate_media(self, rows_media):
        per_row = [torch.cat(m["pixel_values"]) if "pixel_values" in m else torch.zeros(0, 3, 28, 28)
                   for m in rows_media]
        most = max(pv.shape[0] for pv in per_row)
        if most == 0:
            return {}
        # rows with fewer tiles are padded with all-zero images, which the model drops
        return {"pixel_values": torch.stack([torch.cat([pv, pv.new_zeros(most - pv.shape[0], 3, 28, 28)])
                                             for pv in per_row])}


class SmolVLM(Idefics3):
    name = "smolvlm"
    has_video = True

    def classes(self):
        from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

        return SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMVisionConfig

    def video(self, model, item):
        # SmolVLM's processor: "Frame from 00:0k:" then each frame as a global image, same image token.
        ids = []
        for frame in range(item.frames):
            ids += [EXTRA + 6 + frame, self.fake, self.global_token] + [IMAGE] * 4 + [self.fake]
        return ids, {"pixel_values": pixels(item.seed, item.frames, 3, 28, 28)}


# -- Gemma 3, PaliGemma, Mistral 3 -------------------------------------------------------------------------


class Gemma3(Family):
    name = "gemma3"
    boi, eoi = EXTRA, EXTRA + 1
    window = 12

    def build(self, attn="sdpa", seed=0):
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=7)
        layer_types = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                       "full_attention"]
        text = Gemma3TextConfig(**text_kwargs(head_dim=16, sliding_window=self.window, layer_types=layer_types,
                                              query_pre_attn_scalar=16))
        config = Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=4, image_token_index=IMAGE,
                              boi_token_index=self.boi, eoi_token_index=self.eoi)
        torch.manual_seed(seed)
        return finish(Gemma3ForConditionalGeneration(config), attn)

    def image(self, model, item, items):
        return [self.boi] + [IMAGE] * 4 + [self.eoi], {"pixel_values": pixels(item.seed, 1, 3, 28, 28)}

    def extra_inputs(self, token_types):
        return {"token_type_ids": (token_types > 0).long()}

    def prompts(self):
        # long enough that the window (12) cuts the first image off from the last tokens
        prompts = super().prompts()
        prompts[1] = [BOS, 5, 6, 4, 3, Image(2), 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        return prompts


class PaliGemma(Family):
    name = "paligemma"
    newline = EXTRA

    def build(self, attn="sdpa", seed=0):
        from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=7)
        config = PaliGemmaConfig(vision_config=vision, text_config=GemmaConfig(**text_kwargs(head_dim=16)),
                                 image_token_index=IMAGE, projection_dim=HIDDEN)
        torch.manual_seed(seed)
        return finish(PaliGemmaForConditionalGeneration(config), attn)

    def image(self, model, item, items):
        return [IMAGE] * 16, {"pixel_values": pixels(item.seed, 1, 3, 28, 28)}

    def extra_inputs(self, token_types):
        return {"token_type_ids": torch.zeros_like(token_types)}  # the whole prompt is the bidirectional prefix

    def prompts(self):
        # PaliGemma's processor: images first, then <bos> prompt "\n"
        return [
            [Image(1), BOS, 5, 7, 8, 9, self.newline],
            [Image(2), BOS, 5, 6, 4, 3, 7, 8, self.newline],
            [Image(3), Image(4), BOS, 5, 7, 8, 9, self.newline],
        ]


class Mistral3(Family):
    name = "mistral3"
    image_break, image_end = EXTRA, EXTRA + 1

    def build(self, attn="sdpa", seed=0):
        from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

        vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     head_dim=16, image_size=56, patch_size=7)
        config = Mistral3Config(vision_config=vision, text_config=MistralConfig(**text_kwargs(sliding_window=None)),
                                image_token_index=IMAGE, spatial_merge_size=2, vision_feature_layer=-1,
                                multimodal_projector_bias=False)
        torch.manual_seed(seed)
        return finish(Mistral3ForConditionalGeneration(config), attn)

    def image(self, model, item, items):
        rows, cols = item.size[0] // 14, item.size[1] // 14
        ids = []
        for r in range(rows):
            ids += [IMAGE] * cols + [self.image_break if r < rows - 1 else self.image_end]
        return ids, {"pixel_values": pixels(item.seed, 3, *item.size), "image_sizes": torch.tensor([item.size])}

    def collate_media(self, rows_media):
        images = [pv for m in rows_media for pv in m.get("pixel_values", [])]
        if not images:
            return {}
        height, width = max(pv.shape[1] for pv in images), max(pv.shape[2] for pv in images)
        padded = torch.zeros(len(images), 3, height, width)
        for i, pv in enumerate(images):
            padded[i, :, :pv.shape[1], :pv.shape[2]] = pv
        return {"pixel_values": padded, "image_sizes": torch.cat([s for m in rows_media for s in m["image_sizes"]])}


# -- real processors (word-level tokenizers with the family's special tokens; families whose processor
#    needs torchvision, such as Qwen2-VL's video processor or Pixtral's, have none here) -------------------

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "user", ":", "assistant", "describe", "the", "image", ".", "what", "is",
         "in", "picture", "?", "there", "a", "person", "colour", "largest", "object"]
TEMPLATE = ("<s>{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}IMAGE {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
            "{% if add_generation_prompt %}assistant : {% endif %}")


def word_tokenizer(specials: dict[str, int], **named):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS + [f"w{i}" for i in range(len(WORDS), IMAGE)])}
    vocab.update(specials)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", padding_side="left", **named)
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials)})
    return tokenizer


def gemma3_processor():
    from transformers import Gemma3ImageProcessorPil, Gemma3Processor

    names = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    tokenizer = word_tokenizer({"<image_soft_token>": IMAGE, "<start_of_image>": Gemma3.boi,
                                "<end_of_image>": Gemma3.eoi}, extra_special_tokens=names)
    return Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 28, "width": 28}),
                           tokenizer=tokenizer, image_seq_length=4,
                           chat_template=TEMPLATE.replace("IMAGE", "<start_of_image>"))


def paligemma_processor():
    from transformers import PaliGemmaProcessor, SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    image_processor.image_seq_length = 16
    tokenizer = word_tokenizer({"<image>": IMAGE}, extra_special_tokens={"image_token": "<image>"})
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # no chat template


def llava_next_processor():
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                                 image_grid_pinpoints=LlavaNext.pinpoints)
    return LlavaNextProcessor(image_processor=image_processor, tokenizer=word_tokenizer({"<image>": IMAGE}),
                              patch_size=7, vision_feature_select_strategy="default", image_token="<image>",
                              num_additional_image_tokens=1, chat_template=TEMPLATE.replace("IMAGE", "<image>"))


def idefics3_processor():
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    tokenizer = word_tokenizer({"<image>": IMAGE, "<fake_token_around_image>": Idefics3.fake,
                                "<global-img>": Idefics3.global_token, "<end_of_utterance>": EXTRA + 2})
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28})
    return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                             chat_template=TEMPLATE.replace("IMAGE", "<image>"))


PROCESSORS = {"gemma3": gemma3_processor, "paligemma": paligemma_processor, "llava_next": llava_next_processor,
              "idefics3": idefics3_processor}


FAMILIES = {f.name: f for f in (LlavaNext(), LlavaOnevision(), Qwen2VL(), Qwen25VL(), Qwen3VL(), InternVL(),
                                Idefics3(), SmolVLM(), Gemma3(), PaliGemma(), Mistral3())}


class Planter:
    """Puts a massive value in ``SINK_DIMS`` into decoder layer 1's output at chosen tokens.

    Planted: the first real text token (a BOS-like text sink) and the ``patches``-th visual token of every
    image grid (vasink's own grid layout is not used to choose them: positions come from ``choose``).
    The value is ``factor`` times the token's RMS, so phi lands near sqrt(hidden / 2) whatever the scale.
    """

    def __init__(self, model, choose, factor: float = 60.0):
        self.choose, self.factor, self.mask = choose, factor, None
        layers = vasink.models.adapter_for(model).decoder_layers(model)
        self._hooks = [model.register_forward_pre_hook(self._on_model, with_kwargs=True),
                       layers[1].register_forward_hook(self._on_layer1)]

    def _on_model(self, module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        prefill = cache is None or cache.get_seq_length() == 0
        self.mask = self.choose(kwargs["input_ids"], kwargs.get("attention_mask")) if prefill else None

    def _on_layer1(self, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if self.mask is None or hidden.shape[1] != self.mask.shape[1]:
            return output
        rms = hidden.float().pow(2).mean(-1, keepdim=True).sqrt()
        hidden = hidden.clone()
        for d in SINK_DIMS:
            hidden[..., d] = torch.where(self.mask, (self.factor * rms[..., 0]).to(hidden.dtype), hidden[..., d])
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def remove(self):
        for hook in self._hooks:
            hook.remove()


def planted_positions(visual_ids=(IMAGE, VIDEO), patches=(1,)):
    """A ``choose`` for :class:`Planter`: the first real text token and the k-th token of every visual run."""

    def choose(input_ids, attention_mask):
        visual = torch.isin(input_ids, torch.tensor(visual_ids, device=input_ids.device))
        mask = torch.zeros_like(visual)
        start = visual & ~torch.nn.functional.pad(visual, (1, 0))[:, :-1]
        run = start.long().cumsum(-1)
        for row in range(input_ids.shape[0]):
            for block in range(1, int(run[row].max()) + 1):
                positions = (visual[row] & (run[row] == block)).nonzero().flatten()
                for k in patches:
                    if k < len(positions):
                        mask[row, positions[k]] = True
        # the BOS-like token: the first real text token (PaliGemma's <bos> follows its image tokens); from the
        # ids, as the mask may be 2D, 4D or a static cache's dict
        first_text = ((input_ids != PAD) & ~visual).long().argmax(-1)
        mask[torch.arange(len(mask), device=mask.device), first_text] = True
        return mask

    return choose
