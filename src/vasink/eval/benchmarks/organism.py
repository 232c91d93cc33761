"""Benchmarks on the shipped organism's synthetic scenes (test split, fixed seed): they run here in minutes.

- ``organism-pope``: existence questions, POPE's three ways of drawing negatives (random / popular /
  adversarial), scored as POPE.
- ``organism-chair``: "describe the image ." captions, CHAIR-scored against the scene's shapes.
- ``organism-cvbench``: counting and spatial relation as multiple choice (the organism answers in
  words; the word picks the option, as CV-Bench's parser does with option texts).
- ``organism-attribute``: "what color is the <shape> ?".
"""

from __future__ import annotations

import numpy as np

from ...organism import scenes as scene_lib
from ...scoring import chair
from ..registry import Benchmark, Sample, Score, ratio, register
from ._choice import ChoiceScoring, group_accuracy, group_counts
from .pope import PopeScoring

SPLIT = "test"
SEED = 0
NUM_SCENES = 500
LETTERS = "ABCD"
SHAPE_VOCABULARY = {shape: shape for shape in scene_lib.SHAPES}
CHOICES = {"count": list(scene_lib.NUMBER_WORDS[1:]), "spatial": ["yes", "no"]}


class _OrganismBenchmark(Benchmark):
    default_data = None
    max_new_tokens = 4
    families: dict[str, str] = {}  # scene question family -> subset

    def load_samples(self, data, subset, images, limit=None):
        if data:
            raise ValueError(f"{self.name} draws its scenes from vasink.organism.scenes; --data is not used")
        # scenes come from one seeded stream (as scenes.sample draws them), so a --limit run draws only
        # as many scenes as it needs and gets the same first samples as a full run
        rng = np.random.default_rng([scene_lib.SPLIT_IDS[SPLIT], SEED])
        wanted = set(self.families.values())
        counts = dict.fromkeys(wanted, 0)
        samples = []
        for index in range(NUM_SCENES):
            if limit is not None and all(counts[s] >= limit for s in wanted):
                break
            scene = scene_lib.make_scene(rng)
            seen: dict[str, int] = {}
            for question, answer, family in scene.questions:
                if family not in self.families:
                    continue
                k = seen[family] = seen.get(family, -1) + 1
                sample = self.make_sample(scene, question, answer, self.families[family])
                sample.id = f"s{index:04d}-{family}-{k}"
                sample.image_id = f"{SPLIT}-{SEED}-{index:04d}"
                sample.image = scene.image
                samples.append(sample)
                counts[sample.subset] += 1
        return sorted(samples, key=lambda s: self.subsets.index(s.subset) if self.subsets else 0)

    def make_sample(self, scene, question, answer, subset) -> Sample:
        return Sample(id="", prompt=question, target=answer, subset=subset, question=question)


@register("organism-pope")
class OrganismPope(PopeScoring, _OrganismBenchmark):
    description = "organism scenes: is there a <shape>? (random, popular, adversarial negatives)"
    subsets = ("random", "popular", "adversarial")
    families = {f"existence-{s}": s for s in subsets}
    preset = "hallucination"


@register("organism-attribute")
class OrganismAttribute(_OrganismBenchmark):
    description = "organism scenes: what color is the <shape>?"
    families = {"attribute": ""}

    def score(self, target, answer, meta) -> Score:
        words = answer.lower().replace(".", " ").split()
        parsed = next((w for w in words if w in scene_lib.COLORS), answer.strip().lower())
        return Score(parsed, parsed == target, {"correct": float(parsed == target)})


@register("organism-cvbench")
class OrganismCVBench(ChoiceScoring, _OrganismBenchmark):
    description = "organism scenes: counting and spatial relation as multiple choice"
    subsets = ("count", "spatial")
    families = {"counting": "count", "spatial": "spatial"}
    preset = "vision-centric"

    def make_sample(self, scene, question, answer, subset) -> Sample:
        choices = CHOICES[subset]
        return Sample(id="", prompt=question, target=LETTERS[choices.index(answer)], subset=subset,
                      question=question, meta={"choices": choices, "task": subset})

    def group_stats(self, meta, right: bool) -> dict[str, float]:
        return group_counts(meta["task"], right)

    def metrics(self, stats):
        count, spatial = group_accuracy(stats, "count"), group_accuracy(stats, "spatial")
        return {"accuracy": stats["correct"].mean(-1), "count": count, "spatial": spatial,
                "overall": (count + spatial) / 2}


@register("organism-chair")
class OrganismChair(_OrganismBenchmark):
    description = "organism scenes: captions, CHAIR against the scene's shapes"
    families = {"caption": ""}
    max_new_tokens = 40
    preset = "hallucination"
    correct_metric = "chair_s"  # McNemar on "caption has a hallucinated object"
    higher_is_better = {"chair_s": False, "chair_i": False}

    def make_sample(self, scene, question, answer, subset) -> Sample:
        return Sample(id="", prompt=question, target=sorted({o.shape for o in scene.objects}), subset=subset,
                      question=question)

    def score(self, target, answer, meta) -> Score:
        return chair_score(answer, target, SHAPE_VOCABULARY)

    def metrics(self, stats):
        return chair_metrics(stats)


def chair_score(caption: str, objects, vocabulary=None) -> Score:
    """One caption, scored with :func:`vasink.scoring.chair`; ``correct`` = no hallucinated object."""
    detail = chair([caption], [objects], vocabulary=vocabulary)["per_caption"][0]
    mentioned, hallucinated, truth = detail["mentioned"], detail["hallucinated"], detail["ground_truth"]
    clean = not hallucinated
    return Score(mentioned, clean, {
        "correct": float(clean), "hallucinated_caption": float(not clean), "mentions": float(len(mentioned)),
        "hallucinated": float(len(hallucinated)), "truth": float(len(truth)),
        "recalled": float(len(set(truth) & set(mentioned)))})


def chair_metrics(stats):
    return {"chair_s": stats["hallucinated_caption"].mean(-1),
            "chair_i": ratio(stats["hallucinated"], stats["mentions"]),
            "recall": ratio(stats["recalled"], stats["truth"])}
