"""lmms-eval model ``vasink``: any lmms-eval task on a vasink-supported model, with VAR on or off.

    pip install 'vasink[lmms-eval]'
    lmms-eval --model vasink --model_args pretrained=llava-hf/llava-1.5-7b-hf,preset=general --tasks pope

``model_args``: ``pretrained`` (``organism`` or a path / hub id), ``var`` (on/off, default on),
``preset``, ``rho``, ``p``, ``tau``, ``batch_size``, ``device``. lmms-eval finds the model through the
entry point group ``lmms_eval.models`` (``vasink = "vasink.eval.lmms_eval_plugin:manifest"``).
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


class VasinkLMM(lmms):
    is_simple = True

    def __init__(self, pretrained: str = "organism", var: str = "on", preset: str = "general", rho=None, p=None,
                 tau=None, batch_size=1, device: str | None = None, **unused) -> None:
        super().__init__()
        from .loading import load_model

        self.loaded = load_model(str(pretrained), device)
        self.batch_size = int(batch_size)
        if _flag(var) and self.loaded.var_config is None:
            raise ValueError(self.loaded.var_config_missing or f"no sink dimensions known for {pretrained}")
        number = lambda v: None if v is None else float(v)  # noqa: E731  (model_args arrive as strings)
        self.var_config = (self.loaded.var_config.with_preset(preset, rho=number(rho), p=number(p), tau=number(tau))
                           if _flag(var) else None)

    @property
    def model(self):
        return self.loaded.model

    def generate_until(self, requests) -> list[str]:
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
            outputs = generate(self.loaded, images, prompts, max_tokens, self.var_config)
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
