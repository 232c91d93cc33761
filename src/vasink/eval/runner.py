"""``vasink eval``: generate answers for every arm (base, VAR, its peers) on the same prompts, batched, resumable.

    from vasink.eval import EvalSettings, run_eval
    run_eval(EvalSettings(bench="organism-pope", limit=100, out="runs/pope"))               # base and var
    run_eval(EvalSettings(bench="organism-pope", arms=("base", "var", "pai", "vaf", "vcd")))

Each batch is generated once per arm (and per run of a sampled arm; left padding), scored, appended to the
records file and flushed, so a killed run loses at most the batch in flight; running the same command
again skips what is done. A changed config in the same output folder is refused
(:mod:`vasink.eval.records`). Arms and decodings: :mod:`vasink.eval.arms`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import data as datamod
from . import records as recmod
from .arms import GREEDY, Arm, Decoding, build_arms, decoding_for, get_method, method_of, row_seed, switched_on
from .registry import Benchmark, Sample, get_benchmark, parse_bench

VAR_MODES = ("off", "on", "both")
SINK_DIMS_DOC = "docs/method.md#known-sink-dimensions says how to find a model's sink dimensions"


@dataclass
class EvalSettings:
    bench: str  # "NAME" or "NAME:SUBSET"
    model: str = "organism"
    var: str = "both"  # off | on | both (the arms base / var / base,var when ``arms`` is None)
    arms: tuple[str, ...] | None = None  # e.g. ("base", "var", "pai", "vaf", "vcd"); see vasink.eval.arms
    params: dict = field(default_factory=dict)  # arm -> {config field: value} (--set ARM.FIELD=VALUE)
    decoding: str = "greedy"  # greedy | sample (every arm) | official (each arm its method's own)
    seed: int = 0  # sampled arms: with the sample id and the run, seeds each row's generator
    runs: int = 1  # sampled arms: answers per sample
    preset: str | None = None  # VAR preset; default: the benchmark's (general / hallucination / vision-centric)
    rho: float | None = None
    p: float | None = None
    tau: float | None = None
    sink_dims: tuple[int, ...] | None = None  # default: the model's known / measured dims
    limit: int | None = None  # first N samples of each subset
    batch_size: int = 8
    data: str | None = None  # dataset id or local file (default: the benchmark's)
    images: str | None = None  # image folder for local question files
    out: str | None = None  # default: vasink-eval/<bench>
    shard: tuple[int, int] | None = None  # (index, count); default: from accelerate's RANK / WORLD_SIZE
    device: str | None = None
    dtype: str | None = None  # float32 | float16 | bfloat16; default: float16 on CUDA, float32 on CPU
    progress: bool = True
    extra_arms: dict = field(default_factory=dict)  # name -> a method's config (vasink sweep)

    def output_dir(self) -> Path:
        return Path(self.out) if self.out else Path("vasink-eval") / self.bench.replace(":", "-")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"I/N" -> (I, N), 0 <= I < N."""
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return index, count


def launcher_shard() -> tuple[int, int] | None:
    """The data-parallel shard of this process under ``accelerate launch`` / torchrun, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def base_var_config(settings: EvalSettings, loaded, tau: float | None = None):
    """The model's VARConfig with ``--sink-dims`` applied; an error naming the fix when it has none."""
    from ..config import VARConfig

    config = loaded.var_config
    tau = tau if tau is not None else settings.tau
    if config is None:
        if not (settings.sink_dims and tau is not None):
            raise ValueError(f"{loaded.var_config_missing or 'no sink dimensions known for this model'}; "
                             f"a VAR arm needs them: pass --sink-dims and --tau, or --var off for the base arm "
                             f"only ({SINK_DIMS_DOC})")
        config = VARConfig(tau=tau)
    return config.replace(sink_dims=tuple(settings.sink_dims)) if settings.sink_dims else config


def arm_names(settings: EvalSettings) -> tuple[str, ...]:
    """``settings.arms``, or the arms ``--var`` names."""
    if settings.arms is not None:
        return tuple(settings.arms)
    if settings.var not in VAR_MODES:
        raise ValueError(f"--var must be one of {VAR_MODES}, got {settings.var!r}")
    return {"off": ("base",), "on": ("var",), "both": ("base", "var")}[settings.var]


def check_runs(settings: EvalSettings) -> None:
    """``--runs N > 1`` asks for N sampled answers per sample: refused when no arm samples (greedy gives one)."""
    if settings.runs <= 1:
        return
    methods = [*arm_names(settings), *(method_of(config) for config in settings.extra_arms.values())]
    if not any(decoding_for(get_method(method), settings.decoding).sample for method in methods):
        raise ValueError(f"--runs {settings.runs} asks for {settings.runs} sampled answers per sample, but every arm "
                         f"decodes greedily under --decoding {settings.decoding} (one answer each); pass --decoding "
                         f"sample (or official, where a method samples), or leave --runs out")


def check_resume(out: Path, samples: list[Sample], done_records: list[dict]) -> None:
    """Answers reused on resume must be for the questions the data holds now: the same prompt and target."""
    current = {s.id: s for s in samples}
    stale = [r for r in done_records if r["id"] in current
             and (r.get("prompt_hash") != current[r["id"]].prompt_hash
                  or recmod.as_stored(r.get("target")) != recmod.as_stored(current[r["id"]].target))]
    if stale:
        first = stale[0]
        now = current[first["id"]]
        what = "prompt" if first.get("prompt_hash") != now.prompt_hash else "target"
        raise recmod.ConfigMismatch(
            f"{out} holds {len(stale)} answers for questions that the data now asks differently (sample "
            f"{first['id']!r}: its {what} changed, e.g. {first.get('question')!r} -> {now.question!r}); the data "
            f"changed since they were written, so resuming would mix them in; pass another --out, or delete the "
            f"folder {out} to start over")


def var_arms(settings: EvalSettings, bench: Benchmark, loaded) -> dict[str, Arm]:
    """Arm name -> :class:`~vasink.eval.arms.Arm` (method, config, decoding), checked on the model."""
    arms = build_arms(settings, bench, loaded, arm_names(settings), settings.params)
    for name, config in settings.extra_arms.items():
        method = method_of(config)
        arms[name] = Arm(name, method, config,
                         decoding_for(get_method(method), settings.decoding, settings.seed, settings.runs))
    check_arms(loaded, {name: arm.config for name, arm in arms.items()})
    for name, arm in arms.items():  # what another method refuses for this model, before the first answer
        if arm.method not in ("base", "var"):
            try:
                with switched_on(loaded.model, arm.config):
                    pass
            except (ValueError, TypeError) as error:
                raise ValueError(f"arm {name!r}: {error}") from None
    return arms


def check_arms(loaded, arms: dict) -> None:
    """Fail before anything is generated (or written to run.json) when a VAR arm cannot run on this model:
    sink dims unknown or out of range, a tau no token can reach, anything else ``vasink.var`` refuses. The
    messages name the flags to change."""
    import math

    from ..api import var
    from ..config import VARConfig
    from ..models import adapter_for
    from ..sinks import resolve_sink_dims

    text_config = adapter_for(loaded.model).text_config(loaded.model)
    ceiling = math.sqrt(text_config.hidden_size)
    for name, config in arms.items():
        if not isinstance(config, VARConfig):
            continue
        try:
            resolve_sink_dims(config.sink_dims, text_config)
        except ValueError as error:
            reason = str(error).split("; run ")[0]  # the rest is advice for Python callers
            raise ValueError(f"arm {name!r}: {reason}; pass --sink-dims D1,D2 and --tau T ({SINK_DIMS_DOC}), "
                             f"or --var off for the base arm only") from None
        if config.tau >= ceiling:
            own = loaded.var_config.tau if loaded.var_config is not None else None
            leave_out = f", or leave --tau out for the model's own tau ({own:g})" if own is not None else ""
            raise ValueError(f"arm {name!r}: --tau {config.tau:g} can never be reached on this model (phi <= "
                             f"sqrt(hidden_size) = sqrt({text_config.hidden_size}) = {ceiling:.2f}), so VAR would "
                             f"change nothing; pass a --tau below {ceiling:.2f}{leave_out}")
        with var(loaded.model, config):  # whatever else VAR refuses for this model, before the first answer
            pass


def config_payload(config) -> dict | None:
    return None if config is None else dataclasses.asdict(config)


def prepare(settings: EvalSettings):
    """Everything that can fail before a model is loaded: the benchmark, its judge, its samples, images."""
    name, subset = parse_bench(settings.bench)
    bench = get_benchmark(name)
    bench.judge_check()
    samples = bench.load(settings.data, subset, settings.limit, settings.images)
    shard = settings.shard or launcher_shard()
    if shard is not None:
        samples = samples[shard[0]::shard[1]]
    datamod.check_images(samples, f" (benchmark {name}; nothing was generated for them)")
    return bench, subset, samples, shard


def run_description(settings: EvalSettings, bench: Benchmark, subset, model_name: str) -> dict:
    """What a run's folder is for (run.json): a folder holding another run is refused."""
    return {"benchmark": bench.name, "subset": subset, "model": model_name,
            "data": settings.data or bench.default_data or "built-in", "max_new_tokens": bench.max_new_tokens,
            "decoding": settings.decoding, "prompt_suffix": bench.prompt_suffix}


def run_eval(settings: EvalSettings, loaded=None, after_batch: Callable[[int], None] | None = None,
             prepared=None) -> dict:
    """Run (or resume) an evaluation; returns {"out", "generated", "skipped", "records_file"}.

    ``prepared``: what :func:`prepare` returned for these settings, when the caller already ran it."""
    from .loading import load_model

    bench, subset, samples, shard = prepared or prepare(settings)
    if settings.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {settings.batch_size}")
    check_runs(settings)
    out = settings.output_dir()
    path = recmod.records_file(out, shard)
    with recmod.writer_lock(path):  # a second run into this --out (and shard) stops here, before loading a model
        run = run_description(settings, bench, subset, loaded.name if loaded else settings.model)
        # refuse another run's folder before spending minutes on loading a model
        recmod.check_run(out, run, {}, writing=path)
        loaded = loaded or load_model(settings.model, settings.device, settings.dtype)
        run["dtype"] = loaded.dtype  # known once loaded: a resume in another precision would mix answers
        arms = var_arms(settings, bench, loaded)
        hashes = recmod.check_run(out, run, {name: arm.payload() for name, arm in arms.items()},
                                  {name: arm.decoding.payload() for name, arm in arms.items()}, writing=path)
        done, done_records = set(), []
        for record in recmod.read_records(out):
            if record.get("arm") in hashes and record.get("config_hash") == hashes[record["arm"]]:
                done.add((record["id"], record["arm"], record.get("run", 0)))
                done_records.append(record)
        check_resume(out, samples, done_records)
        answers_due = [(arm, run) for arm in arms.values() for run in range(arm.decoding.runs)]
        pending = [s for s in samples if any((s.id, arm.name, run) not in done for arm, run in answers_due)]
        todo_count = sum((s.id, arm.name, run) not in done for s in pending for arm, run in answers_due)
        generated = 0
        with recmod.RecordWriter(path) as writer, _progress(settings, bench, todo_count) as bar:
            for batch_index, start in enumerate(range(0, len(pending), settings.batch_size)):
                batch = pending[start:start + settings.batch_size]
                images = load_images(batch)
                for arm, run in answers_due:
                    todo = [s for s in batch if (s.id, arm.name, run) not in done]
                    if not todo:
                        continue
                    seeds = [row_seed(arm.decoding.seed, s.id, run) for s in todo] if arm.decoding.sample else None
                    answers = generate(loaded, [images[s.id] for s in todo], [s.prompt for s in todo],
                                       bench.max_new_tokens, arm.config, decoding=arm.decoding, seeds=seeds,
                                       run=run, sample_ids=[s.id for s in todo])
                    run_field = run if arm.decoding.sample else None
                    writer.write_batch(make_record(bench, s, arm.name, a, hashes[arm.name], run_field)
                                       for s, a in zip(todo, answers))
                    generated += len(todo)
                    bar.update(len(todo))
                if after_batch is not None:
                    after_batch(batch_index)
    return {"out": out, "generated": generated, "skipped": len(samples) * len(answers_due) - todo_count,
            "records_file": path}


def load_images(samples: list[Sample]) -> dict:
    """Sample id -> PIL image; samples that share an image source (MMBench's rotations) decode it once."""
    by_source, images = {}, {}
    for s in samples:
        key = id(s.image) if s.image is not None else s.id
        if key not in by_source:
            by_source[key] = _load_image(s)
        images[s.id] = by_source[key]
    return images


def _load_image(sample: Sample):
    try:
        return sample.load_image()
    except PermissionError:
        raise PermissionError(f"{sample.image_path()}: no permission to read this image (sample {sample.id!r}); "
                              f"the answers written so far are kept") from None
    except OSError as error:  # PIL's UnidentifiedImageError, a truncated file
        where = sample.image_path() or f"the image of sample {sample.id!r}"
        raise ValueError(f"{where}: not a readable image ({type(error).__name__}: empty or corrupt file; sample "
                         f"{sample.id!r}); the answers written so far are kept") from None


def _progress(settings: EvalSettings, bench: Benchmark, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{bench.name}", unit="sample", disable=not settings.progress, dynamic_ncols=True)


def generate(loaded, images, prompts, max_new_tokens: int, config=None, decoding: Decoding = GREEDY,
             seeds: list[int] | None = None, run: int = 0, sample_ids=()) -> list[str]:
    """Answers for one left-padded batch, with ``config``'s method on (VAR, PAI, VAF, VCD, a registered
    method's config) when it is given; a sampling ``decoding`` draws row i from a generator seeded
    ``seeds[i]`` (:class:`~vasink.eval.arms.SeededSampler`)."""
    from ..generation import generate_answers
    from ..organism import build_inputs
    from .arms import SeededSampler, switched_on

    inputs = build_inputs(loaded.processor, images, list(prompts)).to(loaded.device)
    extra = {}
    if decoding.sample:
        if seeds is None or len(seeds) != len(prompts):
            raise ValueError("a sampling decoding needs one seed per prompt")
        extra["logits_processor"] = [SeededSampler(decoding, seeds)]
    with switched_on(loaded.model, config, run, sample_ids):
        return generate_answers(loaded.model, loaded.processor, inputs, max_new_tokens, **extra)


def make_record(bench: Benchmark, sample: Sample, arm: str, answer: str, config_hash: str,
                run: int | None = None) -> dict:
    meta = {**sample.meta, "question": sample.question}
    score = bench.score(sample.target, answer, meta)
    return {"id": sample.id, "arm": arm, "subset": sample.subset, "image_id": sample.image_id,
            "question": sample.question, "target": sample.target, "prompt_hash": sample.prompt_hash,
            "raw": answer, "parsed": score.parsed, "correct": score.correct,
            "stats": {k: float(v) for k, v in score.stats.items()}, "config_hash": config_hash,
            **({"run": run} if run is not None else {})}
