"""GQA (Hudson & Manning, 2019), testdev-balanced: exact match after lower-casing and dropping periods.

Hub: ``lmms-lab/GQA``, two configs: ``testdev_balanced_instructions`` (split ``testdev``; columns id,
imageId, question, answer, fullAnswer, ...) and ``testdev_balanced_images`` (id, image), joined on
imageId (the images config is read from the same source: the hub id or a downloaded copy). Local:
LLaVA's ``llava_gqa_testdev_balanced.jsonl`` (question_id, image, text) with an ``answer`` field, images
in ``--images``.
"""

from __future__ import annotations

from ...scoring import gqa_match
from ..data import DatasetRowError, is_hub_source, load_hub
from ..registry import Benchmark, Sample, Score, register
from .pope import SHORT_ANSWER

HUB_ID = "lmms-lab/GQA"
IMAGES_CONFIG = "testdev_balanced_images"


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
        source = data or self.default_data
        if is_hub_source(source) and any(s.image is None for s in samples):  # images live in a second config
            image_table = load_hub(str(source), IMAGES_CONFIG, self.default_split)
            position = {image_id: i for i, image_id in enumerate(image_table["id"])}
            missing = sorted({s.image_id for s in samples if s.image_id not in position})
            if missing:
                raise DatasetRowError(f"{source} [{IMAGES_CONFIG}]: no image with id {missing[0]!r} "
                                      f"({len(missing)} image id(s) of the questions are missing)")
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
