"""CHAIR on COCO (Rohrbach et al., 2018): detailed captions of val2014 images, scored against the
images' annotated objects with COCO's synonym lists (:func:`vasink.scoring.chair`).

Needs local COCO files: ``--data`` is ``instances_val2014.json`` (or a folder holding it) and
``--images`` the ``val2014`` image folder (default: ``val2014/`` beside the annotations). 500 images are
drawn with a fixed seed, as in the CHAIR evaluations of OPERA and VAR. Ground truth = the instance
annotations' categories (the original metric also adds objects named in the reference captions when a
``captions_val2014.json`` sits beside the instances file; so does this loader).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..data import DatasetRowError
from ..registry import Benchmark, Sample, register
from .organism import chair_metrics, chair_score

NUM_IMAGES = 500
SEED = 0
PROMPT = "Please describe this image in detail."


@register("chair")
class Chair(Benchmark):
    description = "CHAIR_s / CHAIR_i / recall of detailed COCO captions (needs local COCO annotations)"
    default_data = None
    max_new_tokens = 512
    preset = "hallucination"
    correct_metric = "chair_s"
    higher_is_better = {"chair_s": False, "chair_i": False}

    def load_samples(self, data, subset, images, limit=None):
        if not data:
            raise ValueError("chair needs local COCO annotations: --data instances_val2014.json "
                             "[--images val2014/]")
        path = Path(data)
        if path.is_dir():
            path = path / "instances_val2014.json"
        coco = _read_json(path)
        for key in ("images", "annotations", "categories"):
            if key not in coco:
                raise DatasetRowError(f"{path}: field {key!r} is missing (not a COCO instances file)")
        names = {c["id"]: c["name"] for c in coco["categories"]}
        objects: dict[int, set[str]] = {}
        for i, annotation in enumerate(coco["annotations"]):
            try:
                objects.setdefault(annotation["image_id"], set()).add(names[annotation["category_id"]])
            except KeyError as error:
                raise DatasetRowError(f"{path}: annotations row {i}: field {error.args[0]!r} is missing or "
                                      f"unknown") from None
        self._add_caption_objects(path.parent / "captions_val2014.json", objects)
        image_root = Path(images) if images else path.parent / "val2014"
        chosen = [im for im in coco["images"] if im["id"] in objects]
        chosen.sort(key=lambda im: im["id"])
        random.Random(SEED).shuffle(chosen)
        return [Sample(id=str(im["id"]), prompt=PROMPT, target=sorted(objects[im["id"]]),
                       image=image_root / im["file_name"], image_id=im["file_name"], question=PROMPT)
                for im in chosen[:NUM_IMAGES]]

    @staticmethod
    def _add_caption_objects(path: Path, objects) -> None:
        if not path.exists():
            return
        from ...scoring.chair import COCO_VOCABULARY

        for annotation in _read_json(path).get("annotations", []):
            if annotation.get("image_id") in objects:
                objects[annotation["image_id"]].update(o for _, o in COCO_VOCABULARY.mentions(annotation["caption"]))

    def score(self, target, answer, meta):
        return chair_score(answer, target)

    def metrics(self, stats):
        return chair_metrics(stats)


def _read_json(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetRowError(f"{path}: not valid JSON ({error})") from None
