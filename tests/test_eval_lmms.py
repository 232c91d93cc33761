"""The lmms-eval plugin against the real lmms_eval package (installed without its heavy extras)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
import torch

lmms_eval = pytest.importorskip("lmms_eval.api.model", reason="lmms-eval is not installed")

from conftest import SINK_DIMS, SinkPlanter, tiny_llava, tiny_processor  # noqa: E402
from lmms_eval.api.instance import Instance  # noqa: E402
from lmms_eval.models.registry_v2 import ModelRegistryV2  # noqa: E402
from PIL import Image  # noqa: E402

from vasink import VARConfig  # noqa: E402
from vasink.eval import loading  # noqa: E402
from vasink.eval.lmms_eval_plugin import VasinkLMM, manifest  # noqa: E402


def test_manifest_resolves_through_lmms_eval_registry():
    registry = ModelRegistryV2()
    registry.register_manifest(manifest())
    assert registry.get_model_class("vasink") is VasinkLMM
    assert issubclass(VasinkLMM, lmms_eval.lmms)


def test_entry_point_is_declared_when_installed():
    found = [ep for ep in entry_points(group="lmms_eval.models") if ep.name == "vasink"]
    if not found:
        pytest.skip("package metadata predates the entry point (reinstall: pip install -e .)")
    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    assert registry.get_model_class("vasink") is VasinkLMM


def test_generate_until_on_lmms_eval_instances(monkeypatch):
    """A preset other than the default takes effect, and VAR runs inside generate_until: the handle it
    opened saw the prompt's prefill and found the sinks planted in the tiny model's sink dims."""
    import contextlib

    import vasink.api

    torch.set_num_threads(1)
    model_with_sinks = tiny_llava(num_layers=4)
    planter = SinkPlanter(model_with_sinks)
    tiny = loading.LoadedModel(model_with_sinks, tiny_processor(), "tiny", VARConfig(sink_dims=SINK_DIMS, tau=3.0))
    monkeypatch.setattr(loading, "load_model", lambda spec, device=None, dtype=None: tiny)
    handles = []
    real_var = vasink.api.var

    @contextlib.contextmanager
    def watched_var(model, config=None, **kwargs):
        with real_var(model, config, **kwargs) as handle:
            yield handle
            handles.append((handle.config, handle.last_sinks(), dict(handle.state.has_visual_sink)))
    monkeypatch.setattr(vasink.api, "var", watched_var)

    model = VasinkLMM.create_from_arg_string("pretrained=organism,preset=vision-centric,p=0.5,batch_size=2")
    assert VARConfig().rho != 0.9 and model.var_config.rho == 0.9 and model.var_config.p == 0.5  # the preset's rho
    docs = [{"image": Image.new("RGB", (28, 28), (i * 40, 0, 0))} for i in range(3)]
    model.task_dict = {"pope": {"test": docs}}
    generation = {"max_new_tokens": 3, "until": ["w_never"]}
    requests = [Instance("generate_until", ("<image>\nIs there a person in the image?", generation,
                                            lambda doc: [doc["image"]], i, "pope", "test"),
                         idx=0, metadata={"task": "pope", "doc_id": i, "repeats": 1}) for i in range(3)]
    answers = model.generate_until(requests)
    assert len(answers) == 3 and all(isinstance(a, str) and a for a in answers)
    assert len(handles) == 2  # one VAR call per batch of two
    config, sinks, visual_sink = handles[0]
    assert config.rho == 0.9 and config.p == 0.5  # the config VAR ran with is the preset's
    assert sinks and all(mask.shape[0] == 2 for mask in sinks.values())  # a prefill of the batch was seen
    assert any(visual_sink.values())  # the planted visual sinks were found: VAR had something to redistribute

    handles.clear()
    off = VasinkLMM(pretrained="organism", var="off")
    off.task_dict = model.task_dict
    assert off.var_config is None and len(off.generate_until(requests)) == 3
    assert handles == []  # VAR off: no handle opened
    planter.remove()
