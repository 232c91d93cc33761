"""Benchmarks by name: each is a small registered class (loader + prompt + scorer).

    from vasink.eval.registry import Benchmark, register, get_benchmark

    @register("my-pope")
    class MyPope(Benchmark):
        default_data = "lmms-lab/POPE"
        subsets = ("random", "popular", "adversarial")
        ...

    bench = get_benchmark("my-pope")          # an instance; unknown names list the known ones

A benchmark turns dataset rows into :class:`Sample` objects, scores one answer into a per-sample
:class:`Score` (parsed answer, right/wrong, numeric ``stats``) and turns the stats of many samples into
its metrics with :meth:`Benchmark.metrics`, which works on numpy arrays whose *last* axis runs over
samples (so the bootstrap can pass a whole ``(resamples, samples)`` block at once).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_REGISTRY: dict[str, type["Benchmark"]] = {}



def prompt_hash(prompt: str) -> str:
    """The short hash records keep of a sample's prompt (answers are reused only for the same prompt)."""
    return hashlib.sha1(prompt.encode()).hexdigest()[:12]


@dataclass
class Sample:
    """One question about one image."""

    id: str
    prompt: str  # the full user text sent with the image (question + the benchmark's suffix)
    target: Any  # ground truth, JSON-serialisable (what the scorer needs)
    image: Any = None  # PIL image, a path (str / Path), or a zero-argument callable returning a PIL image
    subset: str = ""  # split / category the report breaks results down by
    image_id: str = ""  # shown in the list of changed answers
    question: str = ""  # the bare question (for the report)
    meta: dict = field(default_factory=dict)  # extra per-sample facts the scorer needs (JSON-serialisable)
    source_id: str = ""  # the dataset's own question id where ``id`` differs (answer files made elsewhere use it)

    @property
    def prompt_hash(self) -> str:
        return prompt_hash(self.prompt)

    def image_path(self) -> Path | None:
        return Path(self.image) if isinstance(self.image, (str, Path)) else None

    def load_image(self):
        """The image as the benchmark's official evaluation reads it (:mod:`vasink.images`, ``photo=False``)."""
        from ..images import load_image

        image = self.image
        if callable(image):
            image = image()
        if image is None:
            raise ValueError(f"sample {self.id!r} has no image")
        if getattr(image, "mode", None) == "RGB":
            return image
        return load_image(image, photo=False)


@dataclass
class Score:
    """One answer, scored."""

    parsed: Any  # the answer as the metric reads it ("yes", "B", a list of objects ...)
    correct: bool | None  # right/wrong when the benchmark has such a notion (for McNemar), else None
    stats: dict[str, float]  # per-sample numbers that :meth:`Benchmark.metrics` aggregates


class Benchmark:
    """Base class. Subclasses set the class attributes and implement ``load_rows`` and ``score``."""

    name: str = ""  # set by @register
    description: str = ""
    comparability: str = ""  # how the number relates to the one papers report, when it differs (docs/benchmarks.md)
    default_data_comparability: str = ""  # the same, about ``default_data`` only (said when a run used it)
    default_data: str | None = None  # hub dataset id (or None: --data is required)
    default_config: str | None = None  # hub dataset config name
    default_split: str = "test"
    subsets: tuple[str, ...] = ()  # known subsets ("" = no breakdown)
    prompt_suffix: str = ""
    max_new_tokens: int = 128
    preset: str = "general"  # VAR preset of the paper for this kind of task
    correct_metric: str | None = "accuracy"  # the metric that is the mean of ``correct`` (McNemar applies)
    needs_judge: bool = False
    higher_is_better: Mapping[str, bool] = {}

    def comparability_for(self, data: str | None) -> str:
        """The comparability note for a run on ``data`` (run.json's): what is said of the default data set (the
        hub's question count...) is left out of a run on a local file."""
        notes = [self.default_data_comparability] if data in (None, self.default_data) else []
        return "; ".join(note for note in [*notes, self.comparability] if note)

    # --- loading -------------------------------------------------------------------------------
    def load(self, data: str | None = None, subset: str | None = None, limit: int | None = None,
             images: str | None = None) -> list[Sample]:
        """Samples of ``subset`` (all subsets when None): with ``limit``, those of the first ``limit`` groups
        (:meth:`limit_group`: a question, or what is scored together) of each subset."""
        if subset and self.subsets and subset not in self.subsets:
            raise ValueError(f"{self.name} has no subset {subset!r}; known: {', '.join(self.subsets)}"
                             f"{_did_you_mean(subset, self.subsets)}")
        samples = self.load_samples(data, subset, images, limit=limit)
        if subset:
            samples = [s for s in samples if s.subset == subset]
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"--limit must be positive, got {limit}")
            taken: dict[str, set[str]] = {}  # subset -> the groups kept
            kept = []
            for s in samples:
                groups, group = taken.setdefault(s.subset, set()), self.limit_group(s)
                if group not in groups and len(groups) < limit:
                    groups.add(group)
                if group in groups:
                    kept.append(s)
            samples = kept
        if not samples:
            raise ValueError(f"{self.name}: no samples to evaluate (data {data or self.default_data!r}, "
                             f"subset {subset!r})")
        ids = [s.id for s in samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"{self.name}: sample id {dup!r} occurs more than once")
        return samples

    def limit_group(self, sample: Sample) -> str:
        """What ``--limit`` counts: one question; benchmarks scored over groups keep a group whole (MME's
        image pair, MMBench's rotated copies, MMVP's pair)."""
        return sample.id

    def load_samples(self, data: str | None, subset: str | None, images: str | None,
                     limit: int | None = None) -> list[Sample]:
        from . import data as datamod

        table = datamod.open_table(data or self.default_data, config=self.default_config,
                                   split=self.default_split, images=images, what=self.name)
        return [sample for row in table.rows() for sample in self.samples_from_row(row)]

    def samples_from_row(self, row) -> list[Sample]:
        """The samples one dataset row gives: usually one; none for rows a benchmark skips, several for
        rotations (MMBench)."""
        return [self.sample_from_row(row)]

    def sample_from_row(self, row) -> Sample:
        raise NotImplementedError

    def answer_key(self, answer: dict) -> str | None:
        """The sample id (or source id) an answer line refers to: a vasink record's ``id``, or the
        ``question_id`` of an answer made elsewhere (LLaVA's eval scripts); None leaves the line out."""
        return str(answer["question_id"] if "question_id" in answer else answer["id"])

    def make_prompt(self, question: str) -> str:
        """The question with the benchmark's suffix (not doubled when a LLaVA question file has it already)."""
        if self.prompt_suffix and question.rstrip().endswith(self.prompt_suffix.strip()):
            return question
        return question + self.prompt_suffix

    # --- scoring -------------------------------------------------------------------------------
    def score(self, target: Any, answer: str, meta: Mapping) -> Score:
        raise NotImplementedError

    def unit_of(self, record: Mapping) -> str:
        """Records of one unit are resampled together by the bootstrap (MME: one image)."""
        return record["id"]

    def unit_stats(self, records: Sequence[Mapping]) -> dict[str, float]:
        """Stats of one unit: by default the sums of its records' stats."""
        out: dict[str, float] = {}
        for record in records:
            for key, value in record["stats"].items():
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def metrics(self, stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Metrics from per-unit stats (arrays, last axis = units). Default: accuracy = mean(correct)."""
        return {"accuracy": _mean(stats["correct"])}

    def judge_check(self) -> None:
        """Raise before anything is generated when a needed judge is not configured."""


def _mean(values: np.ndarray) -> np.ndarray:
    return values.mean(-1) if values.shape[-1] else np.full(values.shape[:-1], np.nan)


def ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float = 0.0) -> np.ndarray:
    """sum(numerator) / sum(denominator) along the last axis; ``empty`` where the denominator is 0."""
    num, den = numerator.sum(-1), denominator.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), empty)


def register(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    """Class decorator: make a benchmark known under ``name``."""
    def wrap(cls: type[Benchmark]) -> type[Benchmark]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"benchmark {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def _ensure_loaded() -> None:
    from . import benchmarks  # noqa: F401  (registers the built-in benchmarks)


def known_benchmarks() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    """Close matches, compared in lower case (``POPE`` -> ``pope``)."""
    lowered = {k.lower(): k for k in known}
    close = [lowered[k] for k in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def parse_bench(spec: str) -> tuple[str, str | None]:
    """"NAME" or "NAME:SUBSET" -> (name, subset or None)."""
    name, _, subset = spec.partition(":")
    return name.strip(), (subset.strip() or None)


def get_benchmark(name: str) -> Benchmark:
    """A fresh instance of the benchmark called ``name``; ValueError listing the known ones otherwise."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ValueError(f"unknown benchmark {name!r}{_did_you_mean(name, sorted(_REGISTRY))}\n"
                         f"known benchmarks: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()
