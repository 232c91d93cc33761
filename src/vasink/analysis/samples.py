"""Models and question sets for the analysis commands.

    model, processor, config = load_model("organism")                # or a local path / hub id
    samples = load_samples("organism-pope", processor, limit=50)      # or any vasink.eval benchmark

A sample is one question about one image with its reference answer and a scorer. The ``organism-*`` sets
are drawn from the organism's test scenes directly; other names go to the ``vasink.eval`` registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import VARConfig

ORGANISM_SETS = {
    "organism-pope": ("existence-random", "existence-popular", "existence-adversarial"),
    "organism-attribute": ("attribute",),
    "organism-counting": ("counting",),
    "organism-spatial": ("spatial",),
    "organism-vqa": ("existence-random", "existence-popular", "existence-adversarial", "attribute", "counting",
                     "spatial"),
}


@dataclass
class AnalysisSample:
    id: str
    image: Any  # PIL image
    prompt: str
    target: Any
    score: Callable[[str], bool]  # answer -> correct
    subset: str = ""
    max_new_tokens: int = 8


def load_model(spec: str = "organism", device: str | None = None, dtype: str | None = None):
    """``(model, processor, default config)`` for "organism" or a local path / hub id of a model class vasink
    supports (the same loading as ``vasink eval``). The config is None for an organism checkpoint whose sinks
    were not measured (no ``vasink.json``)."""
    from ..eval.loading import load_model as load

    loaded = load(spec, device, dtype)
    return loaded.model, loaded.processor, loaded.var_config


def build_inputs(processor, image, prompt: str, device=None):
    """Model inputs for one image and one prompt through the processor's chat template (batch of one)."""
    from ..discovery import build_prompt_inputs

    inputs = build_prompt_inputs(processor, image, prompt)
    return inputs.to(device) if device is not None else inputs


def open_image(path: str | Path):
    """A user's image file as 8-bit RGB, upright (EXIF orientation) and transparency on white (vasink.images)."""
    from ..images import load_image

    path = Path(path).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"--image {path}: this is a folder; pass the path of one image file (PNG, JPEG ...)")
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} not found: pass --image with the path of an existing "
                                "image file (PNG, JPEG ...)")
    try:
        return load_image(path, photo=True)
    except PermissionError:
        raise PermissionError(f"--image {path}: no permission to read this file") from None
    except OSError as error:  # PIL's UnidentifiedImageError, a truncated file
        raise ValueError(f"--image {path}: not a readable image ({type(error).__name__}: an empty or corrupt "
                         f"file, or a format PIL cannot open)") from None


def first_word(answer: str) -> str:
    words = answer.lower().replace(",", " ").replace(".", " ").split()
    return words[0] if words else ""


def organism_samples(name: str, limit: int, seed: int = 0) -> list[AnalysisSample]:
    """``limit`` questions of the families of ``name`` from the organism's test scenes (in scene order)."""
    from ..organism import scenes

    families = ORGANISM_SETS[name]
    out: list[AnalysisSample] = []
    batch = 0
    while len(out) < limit:
        drawn = scenes.sample("test", 64, seed=seed * 1000 + batch)
        for index, scene in enumerate(drawn):
            for question, answer, family in scene.questions:
                if family in families and len(out) < limit:
                    out.append(AnalysisSample(
                        id=f"{name}/{seed}-{batch}-{index}/{len(out)}", image=scene.image, prompt=question,
                        target=answer, score=lambda text, answer=answer: first_word(text) == answer, subset=family))
        batch += 1
    return out


def registry_samples(name: str, limit: int) -> list[AnalysisSample]:
    from ..eval.registry import get_benchmark, parse_bench

    bench_name, subset = parse_bench(name)
    bench = get_benchmark(bench_name)
    if bench.correct_metric is None:
        raise ValueError(f"benchmark {bench_name!r} has no right/wrong answers (no accuracy); "
                         "the ablations need one, e.g. a POPE or VQA benchmark")
    out = []
    for sample in bench.load(subset=subset, limit=limit):
        def score(text, sample=sample):
            return bool(bench.score(sample.target, text, sample.meta).correct)
        out.append(AnalysisSample(id=sample.id, image=sample.load_image(), prompt=sample.prompt, target=sample.target,
                                  score=score, subset=sample.subset, max_new_tokens=bench.max_new_tokens))
    return out


def registry_names() -> list[str]:
    try:
        from ..eval.registry import known_benchmarks
    except ImportError:
        return []
    return known_benchmarks()


def load_samples(name: str, limit: int, seed: int = 0) -> list[AnalysisSample]:
    """Samples of a question set: ``organism-*`` (own scenes) or a name known to ``vasink.eval``."""
    if limit <= 0:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    registered = registry_names()
    if name.partition(":")[0] in registered:
        return registry_samples(name, limit)
    if name in ORGANISM_SETS:
        return organism_samples(name, limit, seed)
    known = sorted(set(ORGANISM_SETS) | set(registered))
    raise ValueError(f"unknown --bench {name!r}; choose one of {', '.join(known)}")
