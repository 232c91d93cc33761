"""The judge-scored benchmarks: MM-Vet, LLaVA-Bench-in-the-wild, MMHal-Bench (see :mod:`vasink.eval.judge`).

The command stops before generating when no judge key is set. MM-Vet's grader prompt is its evaluator's
(few-shot rows, the sample as an open last row); LLaVA-Bench's is LLaVA's review request (``rule.json``);
MMHal-Bench's keeps the official ``eval_gpt4.py`` rating scale word for word, since its threshold (0-2
hallucination, 3-6 none) depends on it. A judge reply that does not parse counts as each benchmark's own
script counts it: MM-Vet 0 after five tries, LLaVA-Bench (-1, -1) in the means (LLaVA's
``eval_gpt_review_bench.py``), MMHal-Bench 0 (``eval_gpt4.py``).
"""

from __future__ import annotations

from pathlib import Path

from ..judge import ask, check_configured
from ..registry import Benchmark, Sample, Score, ratio, register


class _Judged(Benchmark):
    needs_judge = True
    correct_metric = None
    max_new_tokens = 1024

    def judge_check(self) -> None:
        check_configured(self.name)


# MM-Vet's grader prompt (mm-vet_evaluator; lmms-eval's mmvet task carries the same): the instruction, then
# few-shot rows "question | ground truth | prediction | correctness"; the sample is a last row left open.
MMVET_INSTRUCTION = (
    "Compare the ground truth and prediction from AI models, to give a correctness score for the prediction. "
    "<AND> in the ground truth means it is totally right only when all elements in the ground truth are present "
    "in the prediction, and <OR> means it is totally right when any one element in the ground truth is present "
    "in the prediction. The correctness score is 0.0 (totally wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, "
    "0.9, or 1.0 (totally right). Just complete the last space of the correctness score.")
_MEME = "Can you explain this meme?"
_MEME_TRUTH = (
    "This meme is poking fun at the fact that the names of the countries Iceland and Greenland are misleading. "
    "Despite its name, Iceland is known for its beautiful green landscapes, while Greenland is mostly covered in "
    "ice and snow. The meme is saying that the person has trust issues because the names of these countries do "
    "not accurately represent their landscapes.")
MMVET_EXAMPLES = (
    ("What is x in the equation?", "-1 <AND> -5", "x = 3", "0.0"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -1", "0.5"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -5", "0.5"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -5 or 5", "0.5"),
    ("What is x in the equation?", "-1 <AND> -5", "x = -1 or x = -5", "1.0"),
    (_MEME, _MEME_TRUTH, "The meme talks about Iceland and Greenland. It's pointing out that despite their names, "
     "Iceland is not very icy and Greenland isn't very green.", "0.4"),
    (_MEME, _MEME_TRUTH, "The meme is using humor to point out the misleading nature of Iceland's and Greenland's "
     "names. Iceland, despite its name, has lush green landscapes while Greenland is mostly covered in ice and "
     "snow. The text 'This is why I have trust issues' is a playful way to suggest that these contradictions can "
     "lead to distrust or confusion. The humor in this meme is derived from the unexpected contrast between the "
     "names of the countries and their actual physical characteristics.", "1.0"),
)
MMVET_PROMPT = "\n".join([MMVET_INSTRUCTION, "", "Question | Ground truth | Prediction | Correctness",
                           "--- | --- | --- | ---", *(" | ".join(row) for row in MMVET_EXAMPLES),
                           "{question} | {answer} | {prediction} |"])
MMVET_TEMPERATURES = (0.0, 0.5, 1.0, 1.5, 2.0)  # MM-Vet's grader asks again, warmer, while a reply does not parse


def mmvet_correctness(reply: str) -> float | None:
    """The score a grader reply opens with, as MM-Vet reads it (its first word, a number in [0, 1]), or None."""
    words = reply.split()
    try:
        value = float(words[0]) if words else None
    except ValueError:
        return None
    return value if value is not None and 0.0 <= value <= 1.0 else None


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
        """MM-Vet's rule: up to five tries at rising temperature; no parsable score after them counts 0."""
        spaced = target.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
        prompt = MMVET_PROMPT.format(question=meta.get("question", ""), answer=spaced, prediction=answer)
        value = next((v for t in MMVET_TEMPERATURES
                      if (v := mmvet_correctness(ask(prompt, 8, temperature=t))) is not None), 0.0)
        return Score(value, None, {"score": value})

    def metrics(self, stats):
        return {"score": stats["score"].mean(-1)}


# LLaVA's review request for LLaVA-Bench (llava/eval/table/rule.json, the same for conv, detail and complex)
# and eval_gpt_review_bench.py's layout and system message; Assistant 1 is the reference (GPT-4) answer.
LLAVA_W_RULE = (
    "We would like to request your feedback on the performance of two AI assistants in response to the user "
    "question displayed above. The user asks the question on observing an image. For your reference, the visual "
    "content in the image is represented with a few sentences describing the image. \nPlease rate the "
    "helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall "
    "score on a scale of 1 to 10, where a higher score indicates better overall performance.\nPlease first output "
    "a single line containing only two values indicating the scores for Assistant 1 and 2, respectively. The two "
    "scores are separated by a space.\nIn the subsequent line, please provide a comprehensive explanation of your "
    "evaluation, avoiding any potential bias and ensuring that the order in which the responses were presented "
    "does not affect your judgment.")
LLAVA_W_PROMPT = ("[Context]\n{caption}\n\n[Question]\n{question}\n\n[Assistant 1]\n{reference}\n\n"
                  "[End of Assistant 1]\n\n[Assistant 2]\n{prediction}\n\n[End of Assistant 2]\n\n[System]\n"
                  + LLAVA_W_RULE.replace("{", "{{").replace("}", "}}") + "\n\n")
LLAVA_W_SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
UNPARSED_PAIR = (-1.0, -1.0)  # LLaVA's parse_score on a reply whose first line is not two numbers


def llava_review_scores(reply: str) -> tuple[float, float]:
    """(reference, model) scores from the first line of a judge reply, as LLaVA's ``parse_score`` reads it
    (commas count as spaces; exactly two numbers); :data:`UNPARSED_PAIR` otherwise."""
    fields = (reply.split("\n")[0] if reply else "").replace(",", " ").split()
    try:
        reference, model = (float(f) for f in fields) if len(fields) == 2 else UNPARSED_PAIR
    except ValueError:
        return UNPARSED_PAIR
    return reference, model


@register("llava-wild")
class LlavaBenchWild(_Judged):
    description = "LLaVA-Bench-in-the-wild, judge score relative to the reference answer"
    default_data = "lmms-lab/llava-bench-in-the-wild"
    default_split = "train"
    subsets = ("conv", "detail", "complex")

    def sample_from_row(self, row) -> Sample:
        question = row.text("question", "text")
        caption = row.get("caption", default="")
        caption = "\n".join(map(str, caption)) if isinstance(caption, (list, tuple)) else str(caption)
        return Sample(id=row.text("question_id"), prompt=question, target=row.text("gpt_answer", "answer"),
                      image=row.image("image"), subset=row.text("category", default=""),
                      image_id=row.text("image_id", default=""), question=question, meta={"caption": caption})

    def score(self, target, answer, meta) -> Score:
        reply = ask(LLAVA_W_PROMPT.format(caption=meta.get("caption", ""), question=meta.get("question", ""),
                                          reference=target, prediction=answer), 1024, system=LLAVA_W_SYSTEM)
        reference, model = llava_review_scores(reply)
        return Score(model, None, {"judge_reference": reference, "judge_model": model})

    def metrics(self, stats):
        return {"relative_score": 100 * ratio(stats["judge_model"], stats["judge_reference"])}


# The rating scale of MMHal-Bench's eval_gpt4.py: 0-2 hallucination, 3-6 none.
MMHAL_PROMPT = """Please act as an impartial and objective judge and evaluate the quality of the response
provided by a Large Multimodal Model (LMM) to the user question. You do not see the image: you are given
its annotated contents, the question, and a standard human-generated answer. Judge whether the response is
informative, and whether it contains hallucination: claims inconsistent with the image contents, the
question or the human answer, or about objects that are not there. The human answer may be brief and need
not list everything in the image; reasoning grounded in the contents is to be encouraged.

First explain your evaluation briefly. Then rate the response with one of these options:
- Rating: 6, very informative with good analysis or reasoning, no hallucination
- Rating: 5, very informative, no hallucination
- Rating: 4, somewhat informative, no hallucination
- Rating: 3, not informative, no hallucination
- Rating: 2, very informative, with hallucination
- Rating: 1, somewhat informative, with hallucination
- Rating: 0, not informative, with hallucination

### Image Contents
{contents}

### Question
{question}

### Standard Human-Generated Answer
{answer}

### LMM Response to Evaluate
{prediction}
"""
MMHAL_NO_HALLUCINATION = 3  # ratings 3-6 say "no hallucination" (eval_gpt4.py)
MMHAL_DATA_HELP = ("mmhal has no loadable hub copy (Shengcao1006/MMHal-Bench is a loading-script repository, "
                   "which `datasets` no longer runs): download response_template.json and the images/ folder "
                   "from that repository and pass --data response_template.json [--images DIR/images] "
                   "(see docs/benchmarks.md)")


def mmhal_rating(reply: str) -> int:
    """The rating in a judge reply, as eval_gpt4.py reads it: the one ``rating: N`` (N in 0-6) the
    lower-cased reply contains; 0 when it holds none or several."""
    found = [n for n in range(7) if f"rating: {n}" in reply.lower()]
    return found[0] if len(found) == 1 else 0


@register("mmhal")
class MMHalBench(_Judged):
    description = "MMHal-Bench, judge rating (0-6) and hallucination rate (rating < 3)"
    default_data = None  # see MMHAL_DATA_HELP
    preset = "hallucination"
    correct_metric = "hallucination_rate"  # correct = rated >= 3 (no hallucination)
    higher_is_better = {"hallucination_rate": False}

    def load_samples(self, data, subset, images, limit=None):
        if not data:
            raise ValueError(MMHAL_DATA_HELP)
        path = Path(data).expanduser()
        if images is None and path.is_file() and (path.parent / "images").is_dir():
            images = str(path.parent / "images")  # the repository's layout
        return super().load_samples(data, subset, images, limit)

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
        rating = mmhal_rating(reply)
        clean = rating >= MMHAL_NO_HALLUCINATION
        return Score(float(rating), clean, {"rating": float(rating), "correct": float(clean),
                                            "hallucinated": float(not clean)})

    def metrics(self, stats):
        return {"rating": stats["rating"].mean(-1), "hallucination_rate": stats["hallucinated"].mean(-1)}
