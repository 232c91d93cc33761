"""The fused Triton kernel (the GPU fast path) against the reference path.

On a machine without a GPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1);
with VASINK_TEST_DEVICE=cuda it is compiled and run on the GPU.
"""

import pytest
import torch
from conftest import DEVICE, SinkPlanter, batch_inputs, force_fused_kernel, prompt_ids, tiny_llava
from test_var_model import CONFIG, generate, logits

import vasink
import vasink.fused_attention as fused
from vasink.attention import allowed_keys, reference_attention
from vasink.state import LayerPlan

pytest.importorskip("triton")


class Site:
    """What reference_attention reads from an attention module."""

    layer_idx = 3

    def __init__(self, groups):
        self.num_key_value_groups = groups


def case(batch=2, heads=4, kv_heads=2, queries=40, keys=40, head_dim=16, padded=True, seed=0):
    """Random q/k/v and a plan with 12 visual keys, sinks (BOS + two visual), eligible queries after the image."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, queries, head_dim, generator=g)
    k = torch.randn(batch, kv_heads, keys, head_dim, generator=g)
    v = torch.randn(batch, kv_heads, keys, head_dim, generator=g)
    k[:, :, 0] *= 4  # BOS and two patches draw most of the attention, like sinks
    k[:, :, 6] *= 3
    k[:, :, 11] *= 3
    visual = torch.zeros(batch, keys, dtype=torch.bool)
    visual[:, 4:16] = True
    sinks = torch.zeros(batch, keys, dtype=torch.bool)
    sinks[:, [0, 6, 11]] = True
    sinks[-1, [6, 11]] = False  # the last sample has no visual sink (tests skip_layers_without_visual_sink)
    first_query = keys - queries
    positions = torch.arange(first_query, keys)
    eligible = (positions >= 16)[None].expand(batch, -1).clone()
    mask = None
    if padded:  # left padding of 3 keys in sample 0
        valid = torch.ones(batch, keys, dtype=torch.bool)
        valid[0, :3] = False
        causal = torch.arange(keys)[None, :] <= positions[:, None]
        mask = (causal[None] & valid[:, None, :])[:, None]  # (B, 1, Q, K)
        eligible &= valid[:, first_query:]
    plan = LayerPlan(visual_keys=visual, sink_keys=sinks, eligible_queries=eligible)
    to = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    plan = LayerPlan(*(to(t) for t in (plan.visual_keys, plan.sink_keys, plan.eligible_queries)))
    return to(q), to(k), to(v), to(mask), plan


def reference(q, k, v, mask, plan, config):
    out, _ = reference_attention(Site(q.shape[1] // k.shape[1]), q, k, v, mask, q.shape[-1] ** -0.5, plan, config)
    return out


def run_fused(q, k, v, mask, plan, config):
    allowed = None if mask is None else allowed_keys(mask, q.shape[2], k.shape[2], q.device)
    return fused.fused_var_attention(q, k, v, allowed, q.shape[-1] ** -0.5, plan, config)


@pytest.mark.parametrize("compat", ["paper", "released-code"])
@pytest.mark.parametrize("shape", [
    dict(),  # padded prefill, GQA
    dict(padded=False),  # causal, no mask
    dict(queries=1, keys=40, padded=False),  # decode
    dict(queries=3, keys=70, kv_heads=4, head_dim=24),  # several key blocks, head dim not a power of two
])
def test_fused_kernel_equals_reference(compat, shape):
    q, k, v, mask, plan = case(**shape)
    config = CONFIG.replace(compat=compat, rho=0.5, p=0.6, min_visual_attention=0.05)
    stock = reference(q, k, v, mask, None, config)  # no plan: plain attention
    want = reference(q, k, v, mask, plan, config)
    got = run_fused(q, k, v, mask, plan, config)
    real = plan.eligible_queries | ~plan.eligible_queries.any(-1, keepdim=True)  # padded rows are never read
    if mask is not None:
        real = mask[:, 0].any(-1)
    assert (want - stock)[real].abs().max() > 1e-3, "the case must select some rows"
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)


def test_fused_kernel_skips_samples_without_visual_sink():
    q, k, v, mask, plan = case()
    config = CONFIG.replace(min_visual_attention=0.0, rho=0.0)
    kept = reference(q, k, v, mask, plan, config.replace(skip_layers_without_visual_sink=False))
    got = run_fused(q, k, v, mask, plan, config)
    want = reference(q, k, v, mask, plan, config)
    real = mask[:, 0].any(-1)
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
    assert (kept[-1] - want[-1])[real[-1]].abs().max() > 1e-3  # the flag matters for the last sample


def test_model_fast_path_through_the_fused_kernel_equals_reference(monkeypatch):
    calls = force_fused_kernel(monkeypatch)
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids(), prompt_ids(images=2, suffix=(7, 8))])
    base = logits(model, inputs)
    with vasink.var(model, CONFIG):
        fast = logits(model, inputs)
        fast_tokens = generate(model, inputs)
    assert calls, "the fused kernel must run"
    with vasink.var(model, CONFIG.replace(implementation="reference")):
        reference_logits = logits(model, inputs)
        reference_tokens = generate(model, inputs)
    planter.remove()
    real = inputs["attention_mask"].bool()
    assert (fast - base)[real].abs().max() > 1e-3
    torch.testing.assert_close(fast[real], reference_logits[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_tokens, reference_tokens)


def test_heads_too_large_for_the_kernel_take_the_unfused_route(monkeypatch):
    monkeypatch.setattr(fused, "FUSED_DEVICES", (DEVICE.type,))
    monkeypatch.setattr(fused, "MAX_HEAD_DIM", 8)  # tiny_llava's heads are 16 wide
    import vasink.attention as attention

    monkeypatch.setattr(attention, "fused_var_attention", lambda *a: pytest.fail("the fused kernel must not run"))
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    with vasink.var(model, CONFIG):
        fast = logits(model, inputs)
    with vasink.var(model, CONFIG.replace(implementation="reference")):
        reference_logits = logits(model, inputs)
    planter.remove()
    torch.testing.assert_close(fast, reference_logits, rtol=1e-5, atol=1e-5)


def test_fused_kernel_under_a_static_cache_equals_the_dynamic_cache_run(monkeypatch):
    """A static cache hands the kernel all its slots (no mask at the prefill): the same tokens and logits."""
    from test_generate_modes import assert_same_run, run

    calls = force_fused_kernel(monkeypatch)
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    with vasink.var(model, CONFIG):
        dynamic = run(model, inputs, new=3)
        calls.clear()
        static = run(model, inputs, new=3, cache_implementation="static")
    planter.remove()
    assert len(calls) >= 3 * 2, "the kernel runs at the prefill and every decode step of the modified layers"
    assert_same_run(static, dynamic)
