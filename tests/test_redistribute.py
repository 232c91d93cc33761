"""redistribute() against an independent loop over rows written from SPEC §2 / §3."""

import math

import pytest
import torch

from vasink import redistribute


def loop_oracle(weights, visual, sink, queries, rho, p, mva, compat="paper", skip_without_visual_sink=True):
    out = weights.clone().double()
    B, H, Q, K = weights.shape
    removed = p if compat == "paper" else 1 - p
    for b in range(B):
        if skip_without_visual_sink and not any(visual[b, j] and sink[b, j] for j in range(K)):
            continue
        n_visual = sum(bool(visual[b, j]) for j in range(K))
        for h in range(H):
            for i in range(Q):
                if not queries[b, i]:
                    continue
                row = [float(weights[b, h, i, j]) for j in range(K)]
                m_v = sum(row[j] for j in range(K) if visual[b, j])
                m_sv = sum(row[j] for j in range(K) if visual[b, j] and sink[b, j])
                m_s = sum(row[j] for j in range(K) if sink[b, j])
                m_n = sum(row[j] for j in range(K) if visual[b, j] and not sink[b, j])
                if compat == "paper":
                    ok = m_v >= mva and m_v > 0 and (m_v - m_sv) / m_v >= rho
                else:
                    ok = m_v >= mva and m_sv / (m_v + 1e-6 * n_visual) <= rho
                if not ok or m_n == 0:
                    continue
                omega = removed * m_s
                for j in range(K):
                    if sink[b, j]:
                        out[b, h, i, j] = (1 - removed) * row[j]
                    elif visual[b, j]:
                        out[b, h, i, j] = row[j] + omega * row[j] / m_n
    return out


def random_case(seed, B=2, H=3, Q=6, K=12):
    g = torch.Generator().manual_seed(seed)
    weights = torch.softmax(torch.randn(B, H, Q, K, generator=g) * 2, dim=-1)
    visual = torch.zeros(B, K, dtype=torch.bool)
    visual[:, 2:9] = True
    sink = torch.rand(B, K, generator=g) < 0.3
    sink[:, 0] = True  # BOS
    sink[:, 3] = True  # a visual sink in every sample
    queries = torch.rand(B, Q, generator=g) < 0.7
    return weights, visual, sink, queries


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("compat, rho, p", [("paper", 0.5, 0.6), ("paper", 0.8, 0.3), ("released-code", 0.5, 0.6)])
def test_matches_loop_oracle(seed, compat, rho, p):
    weights, visual, sink, queries = random_case(seed)
    got = redistribute(weights, visual, sink, queries, rho=rho, p=p, min_visual_attention=0.2, compat=compat)
    want = loop_oracle(weights, visual, sink, queries, rho, p, 0.2, compat)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    assert not torch.equal(got, weights), "the case must select some rows"


def test_invariants_on_selected_rows():
    weights, visual, sink, queries = random_case(7)
    p = 0.6
    got = redistribute(weights, visual, sink, queries, rho=0.0, p=p, min_visual_attention=0.0)
    torch.testing.assert_close(got.sum(-1), torch.ones_like(got.sum(-1)))
    changed = (got != weights).any(-1)  # (B, H, Q)
    assert changed.any()
    v, s = visual[:, None, None, :], sink[:, None, None, :]
    n = v & ~s
    sink_before, sink_after = (weights * s).sum(-1), (got * s).sum(-1)
    torch.testing.assert_close(sink_after[changed], (1 - p) * sink_before[changed])
    # non-sink visual tokens gain Omega in proportion to their weights
    gain = (got - weights) * n
    omega = p * sink_before
    torch.testing.assert_close(gain.sum(-1)[changed], omega[changed])
    ratio = torch.where(n & (weights > 0), got / weights, torch.nan)
    for b, h, i in changed.nonzero().tolist():
        r = ratio[b, h, i][n[b, 0, 0]]
        torch.testing.assert_close(r, r[:1].expand_as(r))
    # non-eligible queries untouched
    assert torch.equal(got[~queries[:, None, :].expand_as(changed)], weights[~queries[:, None, :].expand_as(changed)])
    # text non-sink keys untouched
    other = ~(v | s).expand_as(got)
    assert torch.equal(got[other], weights[other])


def test_no_visual_sink_leaves_sample_untouched():
    weights, visual, sink, queries = random_case(1)
    sink = sink & ~visual  # only text sinks
    got = redistribute(weights, visual, sink, queries, rho=0.0, p=0.6, min_visual_attention=0.0)
    assert torch.equal(got, weights)
    moved = redistribute(weights, visual, sink, queries, rho=0.0, p=0.6, min_visual_attention=0.0,
                         skip_without_visual_sink=False)
    assert not torch.equal(moved, weights)


def test_all_visual_tokens_sinks_gives_no_nan():
    weights, visual, sink, queries = random_case(2)
    sink = sink | visual  # no non-sink visual mass
    for compat in ("paper", "released-code"):
        got = redistribute(weights, visual, sink, queries, rho=0.0, p=0.6, min_visual_attention=0.0, compat=compat)
        assert not torch.isnan(got).any()
        assert torch.equal(got, weights)


def test_released_code_rho_is_one_minus_paper_rho():
    weights, visual, sink, queries = random_case(3)
    paper = redistribute(weights, visual, sink, queries, rho=0.7, p=0.6, min_visual_attention=0.2)
    released = redistribute(weights, visual, sink, queries, rho=0.3, p=0.4, min_visual_attention=0.2,
                            compat="released-code")
    torch.testing.assert_close(paper, released)


def test_bad_shapes_are_clear_errors():
    weights, visual, sink, queries = random_case(0)
    with pytest.raises(ValueError, match="query_mask"):
        redistribute(weights, visual, sink, queries[:, :2], rho=0.5, p=0.6, min_visual_attention=0.2)
    with pytest.raises(ValueError, match="weights must be"):
        redistribute(weights[0], visual, sink, queries, rho=0.5, p=0.6, min_visual_attention=0.2)


def test_keeps_dtype():
    weights, visual, sink, queries = random_case(0)
    got = redistribute(weights.half(), visual, sink, queries, rho=0.5, p=0.6, min_visual_attention=0.2)
    assert got.dtype == torch.float16
    assert math.isfinite(float(got.float().sum()))
