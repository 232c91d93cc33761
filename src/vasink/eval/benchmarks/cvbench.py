"""CV-Bench (Tong et al., 2024): 2D (count, relation; ADE20K and COCO) and 3D (depth, distance; Omni3D).

Hub: ``nyu-visionx/CV-Bench`` (split ``test``; columns idx, type, task, image, question, choices, answer
"(A)", prompt, source, ...; configs ``default`` (2D and 3D), ``2D``, ``3D``). Scores as CV-Bench's
paper and lmms-eval do: 2D = mean(ADE20K, COCO), 3D = Omni3D, overall = mean(2D, 3D).

``idx`` restarts in each of the 2D and 3D files, so a sample's id is ``<type>-<idx>`` ("2D-0", "3D-0").
"""

from __future__ import annotations

from ...scoring.choice import CVBENCH_2D_SOURCES, CVBENCH_3D_SOURCES, option_letter
from ..registry import Benchmark, Sample, register
from ._choice import LETTER_ANSWER, LETTERS, ChoiceScoring, group_accuracy, group_counts

SOURCES = CVBENCH_2D_SOURCES + CVBENCH_3D_SOURCES


@register("cvbench")
class CVBench(ChoiceScoring, Benchmark):
    description = "CV-Bench 2D / 3D / overall"
    default_data = "nyu-visionx/CV-Bench"
    subsets = ("2D", "3D")
    prompt_suffix = LETTER_ANSWER
    max_new_tokens = 128
    preset = "vision-centric"

    def sample_from_row(self, row) -> Sample:
        source = row.text("source")
        if source not in SOURCES:
            raise row.error("source", f"is {source!r}; expected one of {', '.join(SOURCES)}")
        choices = row.texts("choices")
        letter = option_letter(row.text("answer"), LETTERS[:len(choices)])
        if letter is None:
            raise row.error("answer", "should be an option letter such as '(A)'")
        prompt = row.text("prompt", default="") or row.text("question", "text")
        kind = row.text("type", default="3D" if source in CVBENCH_3D_SOURCES else "2D")
        idx = row.text("idx", "question_id")
        return Sample(id=f"{kind}-{idx}", prompt=self.make_prompt(prompt), target=letter,
                      image=row.image("image"), subset=kind, source_id=idx,
                      image_id=row.text("filename", default=""), question=prompt,
                      meta={"choices": choices, "source": source})

    def group_stats(self, meta, right: bool) -> dict[str, float]:
        return group_counts(meta["source"], right)

    def metrics(self, stats):
        out = {s: group_accuracy(stats, s) for s in SOURCES}
        out["2d"] = sum(out[s] for s in CVBENCH_2D_SOURCES) / len(CVBENCH_2D_SOURCES)
        out["3d"] = sum(out[s] for s in CVBENCH_3D_SOURCES) / len(CVBENCH_3D_SOURCES)
        out["overall"] = (out["2d"] + out["3d"]) / 2
        out["accuracy"] = stats["correct"].mean(-1)
        return out
