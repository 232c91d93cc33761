"""GQA (Hudson & Manning, 2019), testdev-balanced: exact match after lower-casing and dropping periods.

Hub: ``lmms-lab/GQA``, two configs: ``testdev_balanced_instructions`` (split ``testdev``; columns id,
imageId, question, answer, fullAnswer, ...) and ``testdev_balanced_images`` (id, image), joined on
imageId. Local: LLaVA's ``llava_gqa_testdev_balanced.jsonl`` (question_id, image, text) with an
``answer`` field, images in ``--images``.
"""

from __future__ import annotations

from ...scoring import gqa_match
from ..registry import Benchmark, Sample, Score, register
from .pope import SHORT_ANSWER

HUB_ID = "lmms-lab/GQA"


@register("gqa")
class GQA(Benchmark):
    description = "GQA testdev-balanced, exact match"
    default_data = HUB_ID
    default_config = "testdev_balanced_instructions"
    default_split = "testdev"
    prompt_suffix = SHORT_ANSWER
    max_new_tokens = 128

    def load_samples(self, data, subset, images, limit=None):
        samples = super().load_samples(data, subset, images, limit)
        if (data or self.default_data) == HUB_ID:  # images live in a second config
            from ..data import _load_hub

            image_table = _load_hub(HUB_ID, "testdev_balanced_images", self.default_split)
            position = {image_id: i for i, image_id in enumerate(image_table["id"])}
            for sample in samples:
                i = position[sample.image_id]
                sample.image = lambda i=i: image_table[i]["image"]
        return samples

    def sample_from_row(self, row) -> Sample:
        question = row.text("question", "text")
        image_id = row.text("imageId", default="")
        if row.has("image"):
            image = row.image("image")
        else:  # hub instructions schema in a local file: images as <imageId>.jpg in --images
            image = row._path(f"{image_id}.jpg") if image_id and row.images is not None else None
        return Sample(id=row.text("id", "question_id"), prompt=self.make_prompt(question),
                      target=row.text("answer"), image=image, image_id=image_id or row.text("image", default=""),
                      question=question)

    def score(self, target, answer, meta) -> Score:
        right = gqa_match(answer, target)
        return Score(answer.strip().rstrip(".").lower(), right, {"correct": float(right)})
