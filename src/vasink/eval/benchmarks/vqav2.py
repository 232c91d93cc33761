"""VQAv2 (Goyal et al., 2017): open answers, VQA accuracy over 10 human answers.

Hub: ``lmms-lab/VQAv2`` (split ``validation``; columns question_type, multiple_choice_answer, answers
[{answer, answer_confidence, answer_id}], image_id, answer_type, question_id, question, image). The
``testdev`` split has no answers (LLaVA submits it to EvalAI). Local: LLaVA's question JSONL with an
``answers`` field (a list of strings or of {answer: ...}).
"""

from __future__ import annotations

from ...scoring import normalize_vqa_answer, vqa_accuracy
from ..registry import Benchmark, Sample, Score, register
from .pope import SHORT_ANSWER


class VqaScoring:
    """Open-ended questions with ten human answers (VQAv2's format, also TextVQA and VizWiz)."""

    correct_metric = None  # VQA accuracy is a fraction per question, not right/wrong
    metric_name = "vqa_accuracy"
    subset_column: str | None = None  # the column the report breaks results down by
    image_id_column = "image_id"
    normalize = staticmethod(normalize_vqa_answer)  # VQAv2's own evaluation (vqaEval.py, lmms-eval's vqav2)

    def sample_from_row(self, row) -> Sample:
        question = row.text("question", "text")
        return Sample(id=row.text("question_id"), prompt=self.make_prompt(self.question_text(row, question)),
                      target=answers_of(row, "answers"), image=row.image("image"),
                      subset=row.text(self.subset_column, default="") if self.subset_column else "",
                      image_id=row.text(self.image_id_column, default=""), question=question)

    def question_text(self, row, question: str) -> str:
        """The text asked before the benchmark's suffix (TextVQA adds its OCR tokens)."""
        return question

    def score(self, target, answer, meta) -> Score:
        value = vqa_accuracy(answer, target, self.normalize)
        return Score(self.normalize(answer), None, {"correct": value})

    def metrics(self, stats):
        return {self.metric_name: stats["correct"].mean(-1)}


def answers_of(row, *names: str) -> list[str]:
    value = row.get(*names)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict):
        if not all("answer" in a for a in value):
            raise row.error(names[0], "should be a list of {'answer': ...}")
        value = [a["answer"] for a in value]
    answers = row.texts(*names) if not isinstance(value, list) else [str(a) for a in value]
    if not answers:
        raise row.error(names[0], "is an empty list of answers")
    return answers


@register("vqav2")
class VQAv2(VqaScoring, Benchmark):
    description = "VQAv2 val, VQA accuracy"
    default_data = "lmms-lab/VQAv2"
    default_split = "validation"
    subsets = ("yes/no", "number", "other")
    prompt_suffix = SHORT_ANSWER
    max_new_tokens = 128
    subset_column = "answer_type"
    comparability = ("local val split; papers report test-dev, scored by the EvalAI server: compare base vs VAR "
                     "here, not with a paper's number")
