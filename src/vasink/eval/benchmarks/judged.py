"""The judge-scored benchmarks: MM-Vet, LLaVA-Bench-in-the-wild, MMHal-Bench (see :mod:`vasink.eval.judge`).

The command stops before generating when no judge key is set. Grading prompts paraphrase the ones the
benchmarks' authors published (MM-Vet's 0-1 correctness, LLaVA-Bench's pairwise 1-10 ratings against the
reference answer, MMHal-Bench's 0-6 rating with the image's annotated contents).
"""

from __future__ import annotations

import re

from ..judge import ask, check_configured, first_number
from ..registry import Benchmark, Sample, Score, ratio, register


class _Judged(Benchmark):
    needs_judge = True
    correct_metric = None
    max_new_tokens = 1024

    def judge_check(self) -> None:
        check_configured(self.name)


MMVET_PROMPT = """Compare the ground truth with the prediction of an AI model and give the prediction a
correctness score. In the ground truth, <AND> means every listed element must be present, <OR> means any
one of them suffices. The score is one of 0.0 (totally wrong), 0.1, ..., 0.9, 1.0 (totally right).
Reply with the score only.

Question: {question}
Ground truth: {answer}
Prediction: {prediction}
Correctness:"""


@register("mmvet")
class MMVet(_Judged):
    description = "MM-Vet, LLM-judged correctness (0-1)"
    default_data = "lmms-lab/MMVet"

    def sample_from_row(self, row) -> Sample:
        question = row.text("question")
        return Sample(id=row.text("question_id"), prompt=question, target=row.text("answer"), image=row.image("image"),
                      subset=row.text("capability", default=""), image_id=row.text("image_source", default=""),
                      question=question)

    def score(self, target, answer, meta) -> Score:
        reply = ask(MMVET_PROMPT.format(question=meta.get("question", ""), answer=target, prediction=answer), 8)
        value = first_number(reply)
        value = min(1.0, max(0.0, value)) if value is not None else 0.0
        return Score(value, None, {"score": value})

    def metrics(self, stats):
        return {"score": stats["score"].mean(-1)}


LLAVA_W_PROMPT = """[Context]
{caption}

[Question]
{question}

[Assistant 1]
{reference}
[End of Assistant 1]

[Assistant 2]
{prediction}
[End of Assistant 2]

[System]
Rate the helpfulness, relevance, accuracy and level of detail of the two answers to the question about
the image described in the context. Give each assistant an overall score from 1 to 10 (higher is better).
On the first line write only the two scores separated by a space; then explain briefly."""


@register("llava-wild")
class LlavaBenchWild(_Judged):
    description = "LLaVA-Bench-in-the-wild, judge score relative to the reference answer"
    default_data = "lmms-lab/llava-bench-in-the-wild"
    default_split = "train"
    subsets = ("conv", "detail", "complex")

    def sample_from_row(self, row) -> Sample:
        question = row.text("question", "text")
        return Sample(id=row.text("question_id"), prompt=question, target=row.text("gpt_answer", "answer"),
                      image=row.image("image"), subset=row.text("category", default=""),
                      image_id=row.text("image_id", default=""), question=question,
                      meta={"caption": row.text("caption", default="")})

    def score(self, target, answer, meta) -> Score:
        reply = ask(LLAVA_W_PROMPT.format(caption=meta.get("caption", ""), question=meta.get("question", ""),
                                          reference=target, prediction=answer))
        numbers = re.findall(r"\d+(?:\.\d+)?", reply.splitlines()[0] if reply.strip() else "")
        reference, model = (float(numbers[0]), float(numbers[1])) if len(numbers) >= 2 else (0.0, 0.0)
        return Score(model, None, {"judge_reference": reference, "judge_model": model})

    def metrics(self, stats):
        return {"relative_score": 100 * ratio(stats["judge_model"], stats["judge_reference"])}


MMHAL_PROMPT = """You judge whether an AI assistant's answer about an image hallucinates. You do not see
the image; its annotated contents and a standard human answer are given.

Image contents: {contents}
Question: {question}
Standard human answer: {answer}
AI answer: {prediction}

Rate the AI answer from 0 to 6: 6 informative without hallucination, 5 somewhat informative without
hallucination, 4 not informative without hallucination, 3 informative with limited hallucination,
2 somewhat informative with hallucination, 1 not informative with hallucination, 0 wrong or refusing.
End with a line "Rating: N"."""


@register("mmhal")
class MMHalBench(_Judged):
    description = "MMHal-Bench, judge rating (0-6) and hallucination rate (rating < 3)"
    default_data = "Shengcao1006/MMHal-Bench"
    preset = "hallucination"
    correct_metric = "hallucination_rate"  # correct = rated >= 3 (no hallucination)
    higher_is_better = {"hallucination_rate": False}

    def sample_from_row(self, row) -> Sample:
        question = row.text("question")
        contents = row.get("image_content", default=[])
        image = row.image("image") if row.has("image") else row._path(row.text("image_src").rsplit("/", 1)[-1])
        return Sample(id=f"{row.index:03d}", prompt=question, target=row.text("gt_answer", "gt_response"),
                      image=image, subset=row.text("question_type", default=""),
                      image_id=row.text("image_id", default=""), question=question,
                      meta={"contents": ", ".join(map(str, contents)) if isinstance(contents, list) else str(contents)})

    def score(self, target, answer, meta) -> Score:
        reply = ask(MMHAL_PROMPT.format(contents=meta.get("contents", ""), question=meta.get("question", ""),
                                        answer=target, prediction=answer), 512)
        match = re.search(r"rating:\s*(\d)", reply, re.IGNORECASE)
        rating = float(match.group(1)) if match else 0.0
        clean = rating >= 3
        return Score(rating, clean, {"rating": rating, "correct": float(clean), "hallucinated": float(not clean)})

    def metrics(self, stats):
        return {"rating": stats["rating"].mean(-1), "hallucination_rate": stats["hallucinated"].mean(-1)}
