"""Guards against slips the other tests let through (issue 22, "What the tests missed"): each test here was
checked to fail when one comparison or term of the code it covers is broken on purpose.

Expected values come from the loop oracle (test_redistribute.loop_oracle, written from SPEC §2/§3) over plain
softmax weights, never from the code under test.
"""

import pytest
import torch
from conftest import DEVICE, SinkPlanter, batch_inputs, prompt_ids, tiny_llava
from test_redistribute import loop_oracle
from test_var_model import CONFIG, generate, logits

import vasink
from vasink.attention import allowed_keys, correct_eligible_rows, cpu_attention_with_lse
from vasink.state import LayerPlan


class Site:
    """What the attention paths read from an attention module."""

    layer_idx = 2

    def __init__(self, groups):
        self.num_key_value_groups = groups


def planned_case(pads, sinks, visual=range(4, 16), keys=24, heads=4, kv_heads=2, head_dim=8, seed=0):
    """Prefill (queries = keys) with per-sample left padding ``pads`` and sink positions ``sinks`` (counted from
    the first real token); visual keys ``visual`` likewise; eligible queries: real ones after the image."""
    batch = len(pads)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, keys, head_dim, generator=g)
    k = torch.randn(batch, kv_heads, keys, head_dim, generator=g)
    v = torch.randn(batch, kv_heads, keys, head_dim, generator=g)
    visual_keys = torch.zeros(batch, keys, dtype=torch.bool)
    sink_keys = torch.zeros(batch, keys, dtype=torch.bool)
    valid = torch.zeros(batch, keys, dtype=torch.bool)
    eligible = torch.zeros(batch, keys, dtype=torch.bool)
    last_visual = max(visual)
    for b, (pad, positions) in enumerate(zip(pads, sinks)):
        valid[b, pad:] = True
        visual_keys[b, [pad + j for j in visual]] = True
        sink_keys[b, [pad + j for j in positions]] = True
        eligible[b, pad + last_visual + 1:] = True
        for j in positions:  # sinks draw attention, as real ones do
            k[b, :, pad + j] *= 3
    causal = torch.arange(keys)[None, :] <= torch.arange(keys)[:, None]
    mask = (causal[None] & valid[:, None, :])[:, None]  # (B, 1, Q, K)
    plan = LayerPlan(visual_keys=visual_keys, sink_keys=sink_keys, eligible_queries=eligible)
    return q, k, v, mask, plan, valid


def softmax_weights(q, k, mask):
    groups = q.shape[1] // k.shape[1]
    scores = q.double() @ k.double().repeat_interleave(groups, 1).transpose(2, 3) * q.shape[-1] ** -0.5
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)  # (B, H, Q, K)


def oracle_output(q, k, v, mask, plan, config):
    """VAR by the loop oracle on double weights: (B, Q, H, hd)."""
    weights = softmax_weights(q, k, mask)
    changed = loop_oracle(weights, plan.visual_keys, plan.sink_keys, plan.eligible_queries, config.rho, config.p,
                          config.min_visual_attention, config.compat, config.skip_layers_without_visual_sink)
    groups = q.shape[1] // k.shape[1]
    return (changed @ v.double().repeat_interleave(groups, 1)).transpose(1, 2).float()


def plain_output(q, k, v, mask):
    """Attention without VAR: (B, Q, H, hd)."""
    groups = q.shape[1] // k.shape[1]
    return (softmax_weights(q, k, mask) @ v.double().repeat_interleave(groups, 1)).transpose(1, 2).float()


def cpu_fast_path(q, k, v, mask, plan, config):
    site = Site(q.shape[1] // k.shape[1])
    out, lse = cpu_attention_with_lse(site, q, k, v, mask, q.shape[-1] ** -0.5)
    return correct_eligible_rows(out, lse, q, k, v, mask, q.shape[-1] ** -0.5, plan, config)


# -- 1. the CPU fast path in released-code mode --------------------------------------------------------------


def test_cpu_fast_path_equals_oracle_in_released_code_mode():
    """Released code removes 1 - p of the sink mass (not p) and tests m_SV / (m_V + eps |V|) <= rho."""
    q, k, v, mask, plan, valid = planned_case(pads=[0, 3], sinks=[[0, 6, 11], [0, 6]])
    config = CONFIG.replace(compat="released-code", rho=0.5, p=0.6, min_visual_attention=0.05)
    want = oracle_output(q, k, v, mask, plan, config)
    stock = plain_output(q, k, v, mask)
    got = cpu_fast_path(q, k, v, mask, plan, config)
    assert (want - stock)[valid].abs().max() > 1e-2, "the case must select rows"
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-5, atol=1e-5)


def test_model_cpu_fast_path_equals_reference_in_released_code_mode():
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids(), prompt_ids(images=2, suffix=(7, 8))])
    config = CONFIG.replace(compat="released-code", rho=0.5, p=0.6)
    base = logits(model, inputs)
    with vasink.var(model, config):
        fast, fast_tokens = logits(model, inputs), generate(model, inputs, new=4)  # prefill and decode rows
    with vasink.var(model, config.replace(implementation="reference")):
        reference, reference_tokens = logits(model, inputs), generate(model, inputs, new=4)
    planter.remove()
    real = inputs["attention_mask"].bool()
    assert (fast - base)[real].abs().max() > 1e-3
    torch.testing.assert_close(fast[real], reference[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(fast_tokens, reference_tokens)


# -- 2. a mixed batch: the sample with fewer sinks is not the padded one ---------------------------------------


@pytest.mark.parametrize("compat", ["paper", "released-code"])
def test_cpu_fast_path_when_the_unpadded_sample_has_fewer_sinks(compat):
    """Sample 0 (no padding) has 2 sinks, sample 1 (3 pad keys) has 4: sample 0's sink list is the padded one."""
    q, k, v, mask, plan, valid = planned_case(pads=[0, 3], sinks=[[0, 6], [0, 6, 9, 11]])
    config = CONFIG.replace(compat=compat, rho=0.5, p=0.6, min_visual_attention=0.05)
    want = oracle_output(q, k, v, mask, plan, config)
    got = cpu_fast_path(q, k, v, mask, plan, config)
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-5, atol=1e-5)
    alone = cpu_fast_path(q[:1], k[:1], v[:1], mask[:1], LayerPlan(*(t[:1] for t in (
        plan.visual_keys, plan.sink_keys, plan.eligible_queries))), config)
    torch.testing.assert_close(got[0], alone[0], rtol=1e-5, atol=1e-5)


def test_model_mixed_batch_where_the_longer_prompt_has_fewer_sinks():
    """The longer (unpadded) prompt has only BOS and one visual sink; the shorter (padded) one has BOS and two
    per image. Each row of the batch equals that prompt run alone, fast and reference."""
    model = tiny_llava()
    planter = SinkPlanter(model)
    planted_mask = planter.planted_mask
    from conftest import IMAGE_TOKEN
    long_prompt, short_prompt = prompt_ids(prefix=(1, 5, 6, 4, 3)), prompt_ids()

    def fewer_in_long(ids):
        mask = planted_mask(ids)
        for row in range(ids.shape[0]):
            if int((ids[row] != 0).sum()) == len(long_prompt):  # drop the long prompt's second visual sink
                visual = (mask[row] & (ids[row] == IMAGE_TOKEN)).nonzero().flatten()
                mask[row, visual[-1]] = False
        return mask

    planter.planted_mask = fewer_in_long
    batch = batch_inputs([long_prompt, short_prompt])
    assert batch["attention_mask"][0].all() and not batch["attention_mask"][1].all()
    report = vasink.detect_sinks(model, batch, CONFIG)
    assert len(report[2].visual_sink_positions(0)) == 1 and len(report[2].visual_sink_positions(1)) == 2
    for implementation in ("fast", "reference"):
        config = CONFIG.replace(implementation=implementation)
        with vasink.var(model, config):
            together = logits(model, batch)
            alone = []
            for row, prompt in enumerate((long_prompt, short_prompt)):
                single = batch_inputs([prompt])
                single["pixel_values"] = batch["pixel_values"][row:row + 1]  # the same image as in the batch
                alone.append(logits(model, single))
        torch.testing.assert_close(together[0], alone[0][0], rtol=1e-4, atol=1e-4)
        real = batch["attention_mask"][1].bool()
        torch.testing.assert_close(together[1][real], alone[1][0], rtol=1e-4, atol=1e-4)
    planter.remove()


# -- 3. the fused kernel's rows in which every visual key is a sink --------------------------------------------


@pytest.mark.parametrize("compat, rho", [("paper", 0.0), ("released-code", 1.0)])
def test_fused_kernel_rows_whose_visual_keys_are_all_sinks(compat, rho):
    """Sample 0: every visual key a sink (no non-sink visual mass: nothing may move, no NaN); sample 1 an
    ordinary one that VAR changes. The head test is made to pass (rho) so only m_N = 0 keeps sample 0 alone."""
    pytest.importorskip("triton")
    import vasink.fused_attention as fused

    q, k, v, mask, plan, valid = planned_case(pads=[2, 0], sinks=[[0, *range(4, 16)], [0, 6, 11]])
    q, k, v, mask = (t.to(DEVICE) for t in (q, k, v, mask))
    plan = plan.to(DEVICE)
    config = CONFIG.replace(compat=compat, rho=rho, p=0.6, min_visual_attention=0.0)
    allowed = allowed_keys(mask, q.shape[2], k.shape[2], q.device)
    got = fused.fused_var_attention(q, k, v, allowed, q.shape[-1] ** -0.5, plan, config).cpu()
    cpu = [t.cpu() for t in (q, k, v, mask)]
    want = oracle_output(*cpu, plan.to("cpu"), config)
    stock = plain_output(*cpu)
    assert torch.isfinite(got[valid]).all()
    torch.testing.assert_close(got[0][valid[0]], stock[0][valid[0]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-5, atol=1e-5)
    assert (want[1] - stock[1]).abs().max() > 1e-2, "sample 1 must change"


@pytest.mark.parametrize("compat", ["paper", "released-code"])
def test_fused_kernel_when_the_unpadded_sample_has_fewer_sinks(compat):
    """The mixed batch of the CPU test above through the Triton kernel: each sample against the loop oracle."""
    pytest.importorskip("triton")
    import vasink.fused_attention as fused

    q, k, v, mask, plan, valid = planned_case(pads=[0, 3], sinks=[[0, 6], [0, 6, 9, 11]])
    config = CONFIG.replace(compat=compat, rho=0.5, p=0.6, min_visual_attention=0.05)
    want = oracle_output(q, k, v, mask, plan, config)
    q, k, v, mask = (t.to(DEVICE) for t in (q, k, v, mask))
    allowed = allowed_keys(mask, q.shape[2], k.shape[2], q.device)
    got = fused.fused_var_attention(q, k, v, allowed, q.shape[-1] ** -0.5, plan.to(DEVICE), config).cpu()
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-5, atol=1e-5)
    stock = plain_output(*(t.cpu() for t in (q, k, v, mask)))
    assert (want[0] - stock[0]).abs().max() > 1e-2 and (want[1] - stock[1]).abs().max() > 1e-2, "both samples change"


def decode_rows(q, mask, plan, rows):
    """The last ``rows`` queries of a prefill case, as a decode call sees them (keys: the whole sequence)."""
    return (q[:, :, -rows:], mask[:, :, -rows:],
            LayerPlan(plan.visual_keys, plan.sink_keys, plan.eligible_queries[:, -rows:]))


@pytest.mark.parametrize("compat, rho", [("paper", 0.0), ("released-code", 1.0)])
def test_fused_kernel_decode_rows_whose_visual_keys_are_all_sinks(compat, rho):
    """The decode step (one query per sample, with and without a mask) in the same all-sinks batch."""
    pytest.importorskip("triton")
    import vasink.fused_attention as fused

    q, k, v, mask, plan, _ = planned_case(pads=[2, 0], sinks=[[0, *range(4, 16)], [0, 6, 11]])
    q, mask, plan = decode_rows(q, mask, plan, 1)
    config = CONFIG.replace(compat=compat, rho=rho, p=0.6, min_visual_attention=0.0)
    want, stock = oracle_output(q, k, v, mask, plan, config), plain_output(q, k, v, mask)
    device_plan = plan.to(DEVICE)
    for allowed in (allowed_keys(mask, 1, k.shape[2], q.device), None):  # None: causal, the query is the last key
        if allowed is None:
            device_plan = LayerPlan(plan.visual_keys[1:], plan.sink_keys[1:], plan.eligible_queries[1:]).to(DEVICE)
        batch = slice(None) if allowed is not None else slice(1, None)  # no mask: the unpadded sample only
        got = fused.fused_var_attention(*(t[batch].to(DEVICE) for t in (q, k, v)),
                                        None if allowed is None else allowed.to(DEVICE), q.shape[-1] ** -0.5,
                                        device_plan, config).cpu()
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want[batch], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(want[0], stock[0], rtol=0, atol=0)  # sample 0: nothing moves
    assert (want[1] - stock[1]).abs().max() > 1e-2, "sample 1 must change"
