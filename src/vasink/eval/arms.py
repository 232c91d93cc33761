"""Arms of an eval: each is a method (how to build its config for a model) and a decoding.

    from vasink.eval.arms import Method, register_method, known_methods
    known_methods()                 # ['base', 'pai', 'vaf', 'var', 'vcd']

    @register_method("my-method")
    class Mine(Method):
        official = Decoding()       # the decoding of the method's own scripts
        def build(self, settings, bench, loaded, params):
            return MyConfig(**params)   # anything ``vasink.var(model, config)`` accepts

``vasink eval --arms base,var,pai`` builds one :class:`Arm` per name. Every arm decodes the same way by
default (greedy); ``--decoding sample`` samples every arm with the same seeds, ``--decoding official`` gives
each arm its method's official decoding (docs/benchmarks.md#arms-decodings-and-comparisons lists them).

A sampled arm draws each row's tokens from its own generator, seeded by (``--seed``, sample id, run), with
the Gumbel-max rule inside a logits processor that then leaves one finite logit for greedy search to take:
an answer does not depend on the batch it was generated in (so resume and shards give the same answers),
and two arms sampled at the same seed use the same random numbers (a paired comparison of less variance).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `vasink --help` builds the parsers without it
    import torch

DECODINGS = ("greedy", "sample", "official")


@dataclass(frozen=True)
class Decoding:
    """How an arm picks its tokens: greedy, or sampling (temperature, top-p, top-k; 0 = no top-k)."""

    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0  # sampled arms: each row's generator is seeded by (seed, sample id, run)
    runs: int = 1  # sampled arms: independent answers per sample (the report pools them)

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"--runs must be at least 1, got {self.runs}")
        if self.sample and not (self.temperature > 0 and 0 < self.top_p <= 1 and self.top_k >= 0):
            raise ValueError(f"sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0, got {self}")

    def payload(self) -> dict | None:
        """What run.json keeps (None: greedy, which is what every run before arms had decodings used)."""
        return dataclasses.asdict(self) if self.sample else None

    def describe(self) -> str:
        if not self.sample:
            return "greedy"
        top_k = f", top_k {self.top_k}" if self.top_k else ""
        runs = f", {self.runs} runs" if self.runs > 1 else ""
        return f"sampling (temperature {self.temperature:g}, top_p {self.top_p:g}{top_k}; seed {self.seed}{runs})"

    @classmethod
    def from_payload(cls, payload: dict | None) -> "Decoding":
        return cls(**payload) if payload else GREEDY


GREEDY = Decoding()
# VCD's scripts: temperature 1, top_p 1, top_k None (no top-k): plain multinomial sampling (docs/eval.md)
PLAIN_SAMPLING = Decoding(sample=True, temperature=1.0, top_p=1.0, top_k=0)


@dataclass
class Arm:
    """One arm of a run: its name, its method, the method's config (None: the model as loaded), its decoding."""

    name: str
    method: str
    config: Any
    decoding: Decoding = GREEDY

    def payload(self) -> dict | None:
        """The config as run.json stores it; VAR arms keep their bare VARConfig fields (as before arms had
        methods), the others name their method."""
        if self.config is None:
            return None
        fields = dataclasses.asdict(self.config)
        return fields if self.method == "var" else {"method": self.method, **fields}


class Method:
    """How to build one method's config for a model; subclasses registered by name."""

    name = ""
    about = ""  # one line for --help and the report
    official = GREEDY  # the decoding of the method's official scripts
    config_class = ""  # the vasink name of its config class (to recognise an arm's config)

    def build(self, settings, bench, loaded, params: dict):
        """The method's config for ``loaded`` (None: no intervention); ``params`` from ``--set NAME.FIELD=V``."""
        cls = self.config_type()
        try:
            return cls(**params)
        except TypeError as error:
            fields = ", ".join(f.name for f in dataclasses.fields(cls))
            raise ValueError(f"--set {self.name}.*: {error}; {cls.__name__} has {fields}") from None

    def switched_on(self, model, config, run: int = 0, sample_ids=()):
        """The context in which ``model`` generates with ``config`` on (``run`` and ``sample_ids``: which
        answers of the arm the batch gives, for a method that draws random numbers of its own)."""
        from ..api import var

        return var(model, config)

    def config_type(self):
        import vasink

        try:
            return getattr(vasink, self.config_class)
        except AttributeError:
            raise ValueError(f"arm {self.name!r}: vasink.{self.config_class} is not in this version of vasink") \
                from None


_METHODS: dict[str, Method] = {}


def register_method(name: str):
    def wrap(cls):
        cls.name = name
        _METHODS[name] = cls()
        return cls
    return wrap


def known_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    if name not in _METHODS:
        close = difflib.get_close_matches(name, _METHODS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown arm {name!r}; {hint}known: {', '.join(known_methods())}")
    return _METHODS[name]


def method_of(config) -> str:
    """The registered method whose config class ``config`` is (``base`` for None)."""
    if config is None:
        return "base"
    for name, method in _METHODS.items():
        if method.config_class and type(config).__name__ == method.config_class:
            return name
    raise TypeError(f"no eval method takes a {type(config).__name__}")


def switched_on(model, config, run: int = 0, sample_ids=()):
    """``config``'s method on for ``model`` (a no-op context for None)."""
    import contextlib

    if config is None:
        return contextlib.nullcontext()
    return get_method(method_of(config)).switched_on(model, config, run, sample_ids)


@register_method("base")
class Base(Method):
    about = "the model as loaded"

    def build(self, settings, bench, loaded, params):
        if params:
            raise ValueError(f"--set base.{next(iter(params))}: the base arm has no parameters")
        return None


@register_method("var")
class VAR(Method):
    about = "Visual Attention Redistribution (this package)"
    config_class = "VARConfig"

    def build(self, settings, bench, loaded, params):
        from .runner import base_var_config

        overrides = {"rho": settings.rho, "p": settings.p, "tau": settings.tau}
        named = {k: params.pop(k) for k in list(params) if k in ("rho", "p", "tau")}
        tau = named.get("tau", settings.tau)
        config = base_var_config(settings, loaded, tau=tau).with_preset(
            settings.preset or bench.preset, **{**overrides, **named})
        return config.replace(**params) if params else config


@register_method("pai")
class PAI(Method):
    about = "PAI, Liu et al. ECCV 2024: image-key logits z + alpha|z| in the last query row, and a contrast " \
            "against the prompt without its image"
    config_class = "PAIConfig"  # the official commands (README) decode greedily


@register_method("vaf")
class VAF(Method):
    about = "VAF (ClearSight), Yin et al. CVPR 2025: image-key logits x1.15, system-key logits x0.95, middle layers"
    config_class = "VAFConfig"


@register_method("vcd")
class VCD(Method):
    about = "VCD, Leng et al. CVPR 2024: contrast against the same prompt with a diffusion-noised image"
    official = PLAIN_SAMPLING  # the scripts sample: temperature 1, top_p 1, no top-k
    config_class = "VCDConfig"

    def build(self, settings, bench, loaded, params):
        """VCD's noise seed defaults to ``--seed``, so that an eval's noised images are repeatable."""
        return super().build(settings, bench, loaded, {"seed": settings.seed, **params})

    def switched_on(self, model, config, run: int = 0, sample_ids=()):
        """VCD's noise seed for run ``run``: (the config's seed, the run), so each run of a sampled arm sees other
        noise. Each image's noise is drawn from (that seed, its pixels) (vasink.peers.noise), so an answer does
        not depend on the batch it was generated in (batch size, order, resume, shards)."""
        from ..api import var

        if config.seed is not None:
            config = config.replace(seed=row_seed(config.seed, "vcd-noise", run))
        return var(model, config)


def parse_arms(text: str | None) -> tuple[str, ...]:
    """"base,var,pai" -> ('base', 'var', 'pai'); each name a registered method, none twice."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip())
    if not names:
        raise ValueError(f"--arms takes comma-separated arm names ({', '.join(known_methods())}), got {text!r}")
    for name in names:
        get_method(name)
    if len(set(names)) != len(names):
        raise ValueError(f"--arms {text}: an arm is named twice")
    return names


def parse_value(text: str):
    """A --set value: an int, a float, true/false/none, or comma-separated numbers (a tuple such as layers)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part.strip())
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_sets(items) -> dict[str, dict]:
    """["pai.alpha=0.5", "vcd.alpha=1"] -> {"pai": {"alpha": 0.5}, "vcd": {"alpha": 1}}."""
    params: dict[str, dict] = {}
    for item in items or ():
        target, sep, value = item.partition("=")
        arm, dot, field = target.partition(".")
        if not (sep and dot and arm and field):
            raise ValueError(f"--set takes ARM.FIELD=VALUE (e.g. pai.alpha=0.5), got {item!r}")
        get_method(arm.strip())
        params.setdefault(arm.strip(), {})[field.strip()] = parse_value(value)
    return params


def decoding_for(method: Method, policy: str, seed: int = 0, runs: int = 1) -> Decoding:
    """The decoding of an arm under ``--decoding POLICY``."""
    if policy not in DECODINGS:
        raise ValueError(f"--decoding must be one of {DECODINGS}, got {policy!r}")
    chosen = {"greedy": GREEDY, "sample": PLAIN_SAMPLING, "official": method.official}[policy]
    return dataclasses.replace(chosen, seed=seed, runs=runs) if chosen.sample else chosen


def build_arms(settings, bench, loaded, names, params: dict | None = None) -> dict[str, Arm]:
    """Arm name -> :class:`Arm` for ``names``; ``params``: per-arm overrides from ``--set``."""
    params = params or {}
    unused = sorted(set(params) - set(names))
    if unused:
        raise ValueError(f"--set {unused[0]}.*: no arm {unused[0]!r} in --arms {','.join(names)}")
    arms = {}
    for name in names:
        method = get_method(name)
        config = method.build(settings, bench, loaded, dict(params.get(name, {})))
        arms[name] = Arm(name, name, config, decoding_for(method, settings.decoding, settings.seed, settings.runs))
    return arms


def row_seed(seed: int, sample_id: str, run: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{sample_id}\0{run}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SeededSampler:
    """A logits processor that samples each row from its own generator (Gumbel-max after temperature, top-k
    and top-p) and returns logits with only the drawn token finite, so that greedy search takes it."""

    def __init__(self, decoding: Decoding, row_seeds: list[int]):
        import torch

        self.decoding = decoding
        self.generators = [torch.Generator().manual_seed(s) for s in row_seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        d = self.decoding
        logits = scores.float() / d.temperature  # (B, V)
        if d.top_k:
            kth = torch.topk(logits, min(d.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -torch.inf)
        if d.top_p < 1:
            ordered, order = torch.sort(logits, descending=True, dim=-1)
            before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)  # mass of the tokens ranked above
            drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= d.top_p)
            logits = logits.masked_fill(drop, -torch.inf)
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g, dtype=torch.float64)
                               for g in self.generators]).to(logits.device)  # (B, V)
        gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
        choice = (logits.double() + gumbel).argmax(-1)  # (B,)
        out = torch.full_like(scores, -torch.inf)
        return out.scatter(-1, choice[:, None], 0.0)
