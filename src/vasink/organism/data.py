"""Training batches for the organism: scenes -> token ids, labels and pixel values, without the processor.

A training sequence is one scene's dialogue of one or more turns, in SmolLM2's chat format:

    <|im_start|>user\\n<image>x64\\nq1<|im_end|>\\n<|im_start|>assistant\\na1<|im_end|>\\n<|im_start|>user\\nq2...

The ids are the tokenizer's for the whole text (a test holds them equal to the processor's); the loss is on
the answers and their closing ``<|im_end|>`` only (LLaVA's practice).
"""

from __future__ import annotations

import numpy as np
import torch

from . import build, scenes

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
IGNORE = -100


class Encoder:
    """Token ids of dialogue pieces (memoised: the scenes' questions and answers repeat)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.image = tokenizer.convert_tokens_to_ids(build.IMAGE)
        self.pad = tokenizer.pad_token_id
        self._memo: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if text not in self._memo:
            self._memo[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._memo[text]

    def dialogue(self, turns: list[tuple[str, str]], image: bool = True,
                 context: str | None = None) -> tuple[list[int], list[bool]]:
        """Token ids of the turns and, per position, whether it is an answer token (trained). ``context``: a
        line of text shown after the image, before the first question."""
        ids: list[int] = []
        trained: list[bool] = []
        for k, (question, answer) in enumerate(turns):
            user = "<|im_start|>user\n"
            prompt = self.ids(user) + ([self.image] * build.NUM_IMAGE_TOKENS if image and k == 0 else [])
            if context is not None and k == 0:
                prompt += self.ids(("\n" if image else "") + context)
            prompt += self.ids(("\n" if (image or context is not None) and k == 0 else "") + question
                               + "<|im_end|>\n<|im_start|>assistant\n")
            reply = self.ids(answer + "<|im_end|>")
            ids += prompt + reply + self.ids("\n")
            trained += [False] * len(prompt) + [True] * len(reply) + [False]
        return ids, trained

    def batch(self, rng: np.random.Generator, batch_scenes: list[scenes.Scene], max_turns: int = 4,
              families: tuple[str, ...] | None = None,
              weights: dict[str, float] | None = None, caption_last: bool = False, context: float = 0.0,
              patch_labels: bool = False) -> dict[str, torch.Tensor]:
        """A right-padded batch of one dialogue per scene: 1..max_turns of its questions (only ``families``
        when given), shuffled. With ``weights`` they are drawn without replacement with probability
        proportional to their family's weight (families not named weigh 1); with ``caption_last`` a drawn
        caption is asked last (a caption names every object's colour and their left-to-right order, so a
        question after it could be answered from the text instead of the image). With ``context`` > 0, that share
        of the dialogues (drawn per scene) shows the scene's caption as text after the image ("The image shows
        a red circle and a blue square .") and asks no caption: the language model learns to read colours and
        places off a description, a skill it then has to find in the visual tokens. ``patch_labels`` adds each
        patch's shape class, colour class (0: background) and covering object's centre cell (-1: background),
        as stage 0 labels them, for the projector's word targets: ``"patch_labels"``, (B, 64, 3)."""
        seqs = []
        for scene in batch_scenes:
            told = context > 0 and rng.random() < context  # no draw at 0: runs without it keep their stream
            pool = [q for q in scene.questions if (families is None or q[2] in families)
                    and not (told and q[2] == "caption")] or scene.questions
            if weights:
                w = np.array([weights.get(q[2], 1.0) for q in pool], dtype=np.float64)
                k = min(int(rng.integers(1, max_turns + 1)), len(pool))
                chosen = list(rng.choice(len(pool), size=k, replace=False, p=w / w.sum()))
            else:  # the draw of the runs before family_weights, kept as it was so that their recipes reproduce them
                order = rng.permutation(len(pool))
                chosen = list(order[:int(rng.integers(1, max_turns + 1))])
            if caption_last:
                chosen.sort(key=lambda i: pool[i][2] == "caption")  # stable: the drawn order otherwise
            seqs.append(self.dialogue([(pool[i][0], pool[i][1]) for i in chosen],
                                      context=scenes.told(scene) if told else None))
        width = max(len(ids) for ids, _ in seqs)
        input_ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for row, (ids, trained) in enumerate(seqs):
            n = len(ids)
            input_ids[row, :n] = torch.tensor(ids)
            attention_mask[row, :n] = 1
            keep = torch.tensor(trained)
            labels[row, :n] = torch.where(keep, torch.tensor(ids), torch.tensor(IGNORE))
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
               "pixel_values": pixels([s.image for s in batch_scenes])}
        if patch_labels:
            from .pretrain import patch_labels as labels_of

            out["patch_labels"] = patch_label_tensor([labels_of(s) for s in batch_scenes])
        return out


def patch_label_tensor(labels) -> torch.Tensor:
    """:func:`.pretrain.patch_labels` of each scene, stacked: (B, 64, 3) shape, colour, centre cell."""
    return torch.from_numpy(np.stack([np.stack(lab, axis=-1) for lab in labels]))


def pixels(images) -> torch.Tensor:
    """CLIP normalisation of 64x64 RGB images, as CLIPImageProcessor does (no resize needed)."""
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])  # (B, H, W, 3)
    arr = (arr - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
