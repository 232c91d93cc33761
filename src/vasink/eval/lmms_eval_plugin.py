"""lmms-eval model ``vasink``: any lmms-eval task on a vasink-supported model, one arm per run (base, VAR,
PAI, VAF or VCD).

    pip install 'vasink[lmms-eval]'
    lmms-eval --model vasink --model_args pretrained=llava-hf/llava-1.5-7b-hf,preset=general --tasks pope
    lmms-eval --model vasink --model_args pretrained=llava-hf/llava-1.5-7b-hf,arm=pai,gamma=2 --tasks pope
    lmms-eval --model vasink --model_args pretrained=...,arm=vcd,decoding=official,seed=55 --tasks pope

``model_args``: ``pretrained`` (``organism`` or a path / hub id), ``arm`` (base, var, pai, vaf, vcd; default:
``var`` = on/off, default on), ``preset``, ``rho``, ``p``, ``tau`` (VAR), the fields of the arm's config
(``alpha``, ``gamma``, ``image_scale``, VAR's ``compat``, ``sink_dims``, ...; ``layers`` as ``9;10;11``; any other
name is refused), ``decoding`` (greedy, sample,
official: as ``vasink eval --decoding``), ``seed``, ``batch_size``, ``device``. Sampled answers are seeded by
(seed, task, split, doc id), so they do not depend on the batch. lmms-eval finds the model through the entry
point group ``lmms_eval.models`` (``vasink = "vasink.eval.lmms_eval_plugin:manifest"``).
"""

from __future__ import annotations

from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from ..images import to_rgb

MODEL_ID = "vasink"
DEFAULT_MAX_NEW_TOKENS = 128


def manifest() -> ModelManifest:
    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.VasinkLMM")


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "on", "yes")


# model_args lmms-eval adds of its own (besides batch_size and device)
LMMS_EVAL_ARGS = ("max_batch_size",)


def _config_params(arm: str, method, rest: dict) -> dict:
    """The arm's config fields among the model_args, parsed ("9;10" -> (9, 10)); any other name is refused (a
    typo would otherwise run the defaults)."""
    import dataclasses
    import difflib

    from .arms import parse_value

    fields = {f.name for f in dataclasses.fields(method.config_type())} if arm != "base" else set()
    unknown = sorted(k for k in rest if k not in fields and k not in LMMS_EVAL_ARGS)
    if unknown:
        known = sorted(fields | {"pretrained", "arm", "var", "preset", "rho", "p", "tau", "decoding", "seed",
                                 "batch_size", "device"})
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"model_args {', '.join(unknown)}: not a setting of vasink's {arm} arm{hint}; it takes "
                         f"{', '.join(known)}")
    params = {k: parse_value(str(v).replace(";", ",")) for k, v in rest.items() if k in fields}
    for key in ("layers", "sink_dims"):
        if isinstance(params.get(key), int):  # layers=9: one layer
            params[key] = (params[key],)
    return params


class VasinkLMM(lmms):
    is_simple = True

    def __init__(self, pretrained: str = "organism", var: str = "on", preset: str = "general", rho=None, p=None,
                 tau=None, batch_size=1, device: str | None = None, arm: str | None = None, decoding: str = "greedy",
                 seed=0, **rest) -> None:
        super().__init__()
        from .arms import Arm, decoding_for, get_method
        from .loading import load_model

        arm = str(arm) if arm is not None else ("var" if _flag(var) else "base")
        method = get_method(arm)  # an unknown arm or model_arg fails before the model loads
        params = _config_params(arm, method, rest)
        self.loaded = load_model(str(pretrained), device)
        self.batch_size = int(batch_size)
        self.var_config = None
        if arm == "var":
            if self.loaded.var_config is None:
                raise ValueError(self.loaded.var_config_missing or f"no sink dimensions known for {pretrained}")
            number = lambda v: None if v is None else float(v)  # noqa: E731  (model_args arrive as strings)
            self.var_config = self.loaded.var_config.with_preset(preset, rho=number(rho), p=number(p),
                                                                 tau=number(tau), **params)
            config = self.var_config
        else:
            from types import SimpleNamespace

            config = method.build(SimpleNamespace(seed=int(seed)), None, self.loaded, params)
        self.arm = Arm(arm, arm, config, decoding_for(method, decoding, seed=int(seed)))

    @property
    def model(self):
        return self.loaded.model

    def generate_until(self, requests) -> list[str]:
        from .arms import row_seed
        from .runner import generate

        answers: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = [r.args for r in requests[start:start + self.batch_size]]
            images, prompts, stops, max_tokens = [], [], [], DEFAULT_MAX_NEW_TOKENS
            for context, gen_kwargs, doc_to_visual, doc_id, task, split in chunk:
                visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if hasattr(v, "convert")]
                if len(visuals) != 1:
                    raise ValueError(f"vasink's lmms-eval model handles one image per question; {task} doc {doc_id} "
                                     f"has {len(visuals)}")
                images.append(to_rgb(visuals[0], photo=False))  # as lmms-eval's own models read it
                prompts.append(context.replace("<image>", "").strip())
                until = gen_kwargs.get("until") or []
                stops.append([until] if isinstance(until, str) else list(until))
                max_tokens = int(gen_kwargs.get("max_new_tokens", max_tokens))
            decoding = self.arm.decoding
            keys = [f"{task}/{split}/{doc_id}" for _, _, _, doc_id, task, split in chunk]
            seeds = [row_seed(decoding.seed, key, 0) for key in keys] if decoding.sample else None
            outputs = generate(self.loaded, images, prompts, max_tokens, self.arm.config, decoding=decoding,
                               seeds=seeds, sample_ids=keys)
            for text, until in zip(outputs, stops):
                for stop in until:
                    if stop:
                        text = text.split(stop)[0]
                answers.append(text)
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("vasink's lmms-eval model generates answers; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("vasink's lmms-eval model does not support multi-round generation")
