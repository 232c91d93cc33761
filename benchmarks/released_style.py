"""A comparison point written for the benchmark: VAR the way the released code is structured.

Eager attention (a [heads x queries x keys] weight tensor), then a Python loop over heads and, inside,
per-(head, query) indexing of the selected rows (MICV-yonsei/VisAttnSink, ``src/logic/logic.py``, as
described in docs/method.md#the-released-code). Paper semantics for the rule itself, so its output can be checked against ours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.integrations.sdpa_attention import repeat_kv

from vasink.attention import allowed_keys


def released_style_attention(module, query, key, value, attention_mask, scaling, plan, config):
    groups = getattr(module, "num_key_value_groups", 1)
    key_states, value_states = repeat_kv(key, groups), repeat_kv(value, groups)
    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    allowed = allowed_keys(attention_mask, query.shape[2], key.shape[2], query.device)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32)
    removed = config.removed_fraction
    for b in range(weights.shape[0]):
        visual = plan.visual_keys[b].nonzero().flatten()
        sinks = plan.sink_keys[b].nonzero().flatten()
        visual_sinks = (plan.visual_keys[b] & plan.sink_keys[b]).nonzero().flatten()
        nonsink = (plan.visual_keys[b] & ~plan.sink_keys[b]).nonzero().flatten()
        if len(visual_sinks) == 0:
            continue
        queries = plan.eligible_queries[b].nonzero().flatten().tolist()
        for h in range(weights.shape[1]):
            head = weights[b, h]
            for i in queries:
                m_v = head[i, visual].sum()
                if m_v < config.min_visual_attention:
                    continue
                m_sv = head[i, visual_sinks].sum()
                if (m_v - m_sv) / m_v < config.rho:
                    continue
                m_n = head[i, nonsink].sum()
                if m_n <= 0:
                    continue
                omega = removed * head[i, sinks].sum()
                head[i, nonsink] = head[i, nonsink] + omega * head[i, nonsink] / m_n
                head[i, sinks] = (1 - removed) * head[i, sinks]
    out = torch.matmul(weights.to(value_states.dtype), value_states)
    return out.transpose(1, 2).contiguous(), weights
