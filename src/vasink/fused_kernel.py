"""The Triton kernel behind ``fused_attention.fused_var_attention`` (see that module for what it computes).

Imported on first use only: Triton reads ``TRITON_INTERPRET`` when this module is imported.
"""

import triton
import triton.language as tl


@triton.jit
def var_attention_kernel(
    Q, K, V, Out, Mask, Groups, Eligible, HasVisualSink, NumVisual,
    sq_b, sq_h, sq_m, sq_d, sk_b, sk_h, sk_n, sk_d, sv_b, sv_h, sv_n, sv_d, so_b, so_m, so_h, so_d,
    smask_b, smask_m, smask_n, sg_b, sg_n, se_b, se_m,
    H, GROUPS, M, N, G, D,
    scale, rho, min_visual, removed, eps_visual,
    HAS_MASK: tl.constexpr, PAPER: tl.constexpr, SKIP_WITHOUT_VISUAL_SINK: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kv_h = h // GROUPS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < M
    d_ok = offs_d < D
    q = tl.load(Q + b * sq_b + h * sq_h + offs_m[:, None] * sq_m + offs_d[None, :] * sq_d,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running max of the logits
    l_all = tl.zeros([BLOCK_M], tl.float32)  # running denominators: all keys, S, SV, N
    l_s = tl.zeros([BLOCK_M], tl.float32)
    l_sv = tl.zeros([BLOCK_M], tl.float32)
    l_n = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running sum p @ v: all keys, S, N
    acc_s = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc_n = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    offset = N - M  # causal: query i sees keys <= i + offset
    if HAS_MASK:
        end = N
    else:
        end = tl.minimum(N, (pid_m + 1) * BLOCK_M + offset)
    for start_n in range(0, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        kv_mask = n_ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * sk_b + kv_h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :] * sk_d,
                    mask=kv_mask, other=0.0)  # (BLOCK_N, BLOCK_D)
        v = tl.load(V + b * sv_b + kv_h * sv_h + offs_n[:, None] * sv_n + offs_d[None, :] * sv_d,
                    mask=kv_mask, other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * scale  # (BLOCK_M, BLOCK_N) float32
        allowed = row_ok[:, None] & n_ok[None, :]
        if HAS_MASK:
            bits = tl.load(Mask + b * smask_b + offs_m[:, None] * smask_m + offs_n[None, :] * smask_n,
                           mask=allowed, other=0)
            allowed = allowed & (bits != 0)
        else:
            allowed = allowed & (offs_n[None, :] <= offs_m[:, None] + offset)
        s = tl.where(allowed, s, float("-inf"))

        flags = tl.load(Groups + b * sg_b + offs_n * sg_n, mask=offs_n < G, other=0)  # (BLOCK_N,)
        is_sink = (flags & 1) != 0
        is_visual = (flags & 2) != 0
        is_nonsink_visual = is_visual & ~is_sink

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        p_s = tl.where(is_sink[None, :], p, 0.0)
        p_n = tl.where(is_nonsink_visual[None, :], p, 0.0)
        l_all = l_all * alpha + tl.sum(p, 1)
        l_s = l_s * alpha + tl.sum(p_s, 1)
        l_sv = l_sv * alpha + tl.sum(tl.where((is_sink & is_visual)[None, :], p, 0.0), 1)
        l_n = l_n * alpha + tl.sum(p_n, 1)
        acc = acc * alpha[:, None]
        acc_s = acc_s * alpha[:, None]
        acc_n = acc_n * alpha[:, None]
        if IEEE:
            acc += tl.dot(p, v, input_precision="ieee")
        else:
            acc += tl.dot(p.to(v.dtype), v)
        if tl.max(is_sink.to(tl.int32), 0) > 0:  # only the few blocks that hold a sink
            if IEEE:
                acc_s += tl.dot(p_s, v, input_precision="ieee")
            else:
                acc_s += tl.dot(p_s.to(v.dtype), v)
        if tl.max(is_nonsink_visual.to(tl.int32), 0) > 0:  # only image blocks
            if IEEE:
                acc_n += tl.dot(p_n, v, input_precision="ieee")
            else:
                acc_n += tl.dot(p_n.to(v.dtype), v)
        m_i = m_new

    # Epilogue: group masses, the head test (docs/method.md#the-image-centric-head-test), and the corrected output.
    tiny = 1.1754943508222875e-38
    denominator = tl.where(l_all > 0, l_all, 1.0)
    sink_mass = l_s / denominator
    visual_sink_mass = l_sv / denominator
    nonsink_mass = l_n / denominator
    visual_mass = visual_sink_mass + nonsink_mass
    selected = visual_mass >= min_visual
    if PAPER:
        ratio = nonsink_mass / tl.maximum(visual_mass, tiny)
        selected = selected & (visual_mass > 0) & (ratio >= rho)
    else:
        num_visual = tl.load(NumVisual + b)
        ratio = visual_sink_mass / tl.maximum(visual_mass + eps_visual * num_visual, tiny)
        selected = selected & (ratio <= rho)
    eligible = tl.load(Eligible + b * se_b + offs_m * se_m, mask=row_ok, other=0)
    selected = selected & (eligible != 0) & (nonsink_mass > 0)
    if SKIP_WITHOUT_VISUAL_SINK:
        selected = selected & (tl.load(HasVisualSink + b) != 0)
    gain = removed * sink_mass / tl.maximum(nonsink_mass, tiny)
    corrected = acc + gain[:, None] * acc_n - removed * acc_s
    o = tl.where(selected[:, None], corrected, acc) / denominator[:, None]
    tl.store(Out + b * so_b + offs_m[:, None] * so_m + h * so_h + offs_d[None, :] * so_d,
             o.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
