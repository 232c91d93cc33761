"""PAI, VAF and VCD against independent implementations of their official formulas, on tiny models of several
families: left-padded batches through ``model.generate`` (prefill and every decode step) against a
reference that recomputes each prompt alone, without any cache, with eager float64 loops over batch rows
and heads (PAI, VAF) or the closed-form noise (VCD). Every family runs every method.

The reference finds its spans from the fixtures' token ids (IMAGE, VIDEO), not from vasink's adapters.
"""

import math

import pytest
import torch
from families_fixtures import FAMILIES, IMAGE, VIDEO
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import vasink
from vasink.models import adapter_for

REFERENCE = "peers-test-reference"
NEW = 3  # generated tokens per test
REF: dict = {}  # what the reference attention applies in the current forward (set by each test)
_MODELS: dict = {}


def model_of(name: str):
    if name not in _MODELS:
        model = FAMILIES[name].build("sdpa")
        if name == "gemma3":  # its projector is initialized to zero: image features 0 whatever the pixels (VCD)
            weight = model.model.multi_modal_projector.mm_input_projection_weight
            weight.data.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
        _MODELS[name] = model
    return _MODELS[name]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# -- the independent reference -----------------------------------------------------------------------------


def reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention in float64, one (batch row, head) at a time, with the official edits of ``REF``:
    VAF multiplies the logits of its rows' image / system columns before the mask (ClearSight
    AttnAdapter.py); PAI adds alpha * |z| to its rows' image columns after the mask (PAI attention.py)."""
    batch, heads, num_queries, head_dim = query.shape
    num_keys = key.shape[2]
    groups = heads // key.shape[1]
    scaling = scaling if scaling is not None else head_dim ** -0.5
    if attention_mask is None:
        allowed = torch.ones(num_queries, num_keys, dtype=torch.bool).tril(num_keys - num_queries)
        allowed = allowed.to(query.device)[None, None].expand(batch, 1, -1, -1)
    elif attention_mask.dtype == torch.bool:
        allowed = attention_mask.expand(batch, 1, num_queries, num_keys)
    else:
        allowed = (attention_mask > torch.finfo(attention_mask.dtype).min / 2).expand(batch, 1, num_queries, num_keys)
    method = REF.get("method") if module.layer_idx in REF.get("layers", ()) else None
    out = torch.empty(batch, num_queries, heads, head_dim, dtype=torch.float64, device=query.device)
    for b in range(batch):
        for h in range(heads):
            z = query[b, h].double() @ key[b, h // groups].double().T * scaling  # (Q, K)
            if method == "vaf":
                for row in REF["rows"][b].nonzero().flatten().tolist():
                    z[row, REF["image"][b]] *= REF["image_scale"]
                    z[row, REF["system"][b]] *= REF["system_scale"]
            z = z.masked_fill(~allowed[b, 0], torch.finfo(torch.float64).min)
            if method == "pai":
                for row in REF["rows"][b].nonzero().flatten().tolist():
                    z[row, REF["image"][b]] += REF["alpha"] * z[row, REF["image"][b]].abs()
            out[b, :, h] = torch.softmax(z, -1) @ value[b, h // groups].double()
    return out.to(query.dtype), None


AttentionInterface.register(REFERENCE, reference_attention)
AttentionMaskInterface.register(REFERENCE, sdpa_mask)


def generate(model, inputs, **kwargs):
    """(new tokens (B, NEW), step logits (B, NEW, V)) of greedy generate."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=NEW, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, **kwargs)
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, dim=1)


def extended(inputs: dict, new_tokens: torch.Tensor, drop_image: bool = False, new_type: int = 0) -> dict:
    """``inputs`` followed by ``new_tokens`` (teacher forcing); with ``drop_image`` the image placeholders and
    pixels are removed (each row must be unpadded: one prompt). Generated tokens get token type ``new_type``
    (PaliGemma's causal suffix is 1, its prefix 0)."""
    out = dict(inputs)
    ids = torch.cat([inputs["input_ids"], new_tokens], dim=1)
    keep = torch.ones_like(ids, dtype=torch.bool)
    if drop_image:
        assert ids.shape[0] == 1
        keep = ~torch.isin(ids, torch.tensor([IMAGE, VIDEO], device=ids.device))
        out = {k: v for k, v in out.items() if k in ("token_type_ids", "mm_token_type_ids")}
    out["input_ids"] = ids[keep][None] if drop_image else ids
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(new_tokens)], dim=1)[keep].view(
        ids.shape[0], -1)
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in out:
            types = torch.cat([inputs[key], torch.full_like(new_tokens, new_type)], dim=1)
            out[key] = types[keep].view(ids.shape[0], -1)
    return out


def reference_logits(model, inputs: dict, ref: dict | None) -> torch.Tensor:
    """Logits (B, L, V) of one cache-free forward, the attention being the reference with ``ref`` (None: stock)."""
    adapter = adapter_for(model)
    REF.clear()
    REF.update(ref or {})
    adapter.set_text_attention(model, REFERENCE)
    try:
        with torch.no_grad():
            return model(**inputs).logits
    finally:
        adapter.set_text_attention(model, "sdpa")
        REF.clear()


def spans(ids: torch.Tensor, prompt_length: int) -> dict:
    """(1, L) ids of one unpadded prompt + generated tokens -> image / system columns and the rows after the
    image, from the token ids."""
    image = torch.isin(ids[0], torch.tensor([IMAGE, VIDEO], device=ids.device))
    image[prompt_length:] = False
    positions = torch.arange(ids.shape[1], device=ids.device)
    first = int(image.nonzero()[0]) if image.any() else ids.shape[1]
    return {"image": image[None], "system": (positions < first)[None] & image.any(),
            "after_image": ((positions > first) & ~image)[None]}


def changed(logits: torch.Tensor, stock: torch.Tensor) -> bool:
    """More than float noise apart (-inf of a plausibility cut counts as a change)."""
    return bool(((logits - stock).nan_to_num(0.0, 1.0, 1.0).abs() > 1e-5).any())


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    return logits.double().log_softmax(-1)


# -- the methods against the reference ---------------------------------------------------------------------

EXACT_FAMILIES = ["llava_next", "qwen2_vl", "gemma3", "paligemma"]
SUFFIX_TYPE = {"paligemma": 1}  # token type of generated tokens, where it is not 0


def prompts_of(family):
    return family.prompts()[:3]  # images only (VCD noises images; the all-family test below runs videos too)


@pytest.mark.parametrize("name", EXACT_FAMILIES)
def test_vaf_equals_reference(name):
    """Image logits x1.15, system logits x0.95, before the mask, on the text rows after the image in the prompt
    and on every decoded row; layer 2 untouched; batch with left padding = each prompt alone."""
    family, model = FAMILIES[name], model_of(name)
    config = vasink.VAFConfig(image_scale=1.6, system_scale=0.7, layers=(1, 3))
    prompts = prompts_of(family)
    with vasink.var(model, config):
        tokens, steps = generate(model, family.inputs(model, prompts))
    stock = generate(model, family.inputs(model, prompts))[1]
    assert changed(steps, stock), "VAF must change the logits"
    for row, prompt in enumerate(prompts):
        alone = family.inputs(model, [prompt])
        length = alone["input_ids"].shape[1]
        full = extended(alone, tokens[row:row + 1], new_type=SUFFIX_TYPE.get(name, 0))
        where = spans(full["input_ids"], length)
        ref = {"method": "vaf", "layers": {1, 3}, "rows": where["after_image"], "image": where["image"],
               "system": where["system"], "image_scale": 1.6, "system_scale": 0.7}
        expected = reference_logits(model, full, ref)[0, length - 1:length - 1 + NEW]
        torch.testing.assert_close(steps[row], expected.to(steps.dtype), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [
    *[n for n in EXACT_FAMILIES if n != "gemma3"],
    # Known issue: the guidance differs (0.49 max) on the prompt whose image-free part is longer than Gemma 3's
    # sliding window (12); the attention edit alone (gamma 1) matches. Not found yet.
    pytest.param("gemma3", marks=pytest.mark.xfail(strict=True, reason="guidance past Gemma 3's sliding window")),
])
def test_pai_equals_reference(name):
    """Attention: z + alpha|z| on the image columns of the last row of each forward (so, cache-free, every row
    from the prompt's last token on). Logits: gamma (s - u) + u against the prompt without its image, -inf
    under log(cutoff) + max s. Batch with left padding = each prompt alone."""
    family, model = FAMILIES[name], model_of(name)
    config = vasink.PAIConfig(alpha=0.5, gamma=2.0, layers=(1, 2, 4), cutoff=0.05)
    prompts = prompts_of(family)
    with vasink.var(model, config):
        tokens, steps = generate(model, family.inputs(model, prompts))
    for row, prompt in enumerate(prompts):
        alone = family.inputs(model, [prompt])
        length = alone["input_ids"].shape[1]
        full = extended(alone, tokens[row:row + 1], new_type=SUFFIX_TYPE.get(name, 0))
        where = spans(full["input_ids"], length)
        last_rows = (torch.arange(full["input_ids"].shape[1], device=where["image"].device) >= length - 1)[None]
        ref = {"method": "pai", "layers": {1, 2, 4}, "rows": last_rows, "image": where["image"], "alpha": 0.5}
        cond = log_probs(reference_logits(model, full, ref)[0, length - 1:length - 1 + NEW])
        no_image = extended(alone, tokens[row:row + 1], drop_image=True, new_type=SUFFIX_TYPE.get(name, 0))
        image_free_length = no_image["input_ids"].shape[1] - NEW
        uncond = log_probs(reference_logits(model, no_image, None)[0, image_free_length - 1:image_free_length - 1 + NEW])
        expected = 2.0 * (cond - uncond) + uncond
        expected[cond < math.log(0.05) + cond.max(-1, keepdim=True).values] = -math.inf
        torch.testing.assert_close(steps[row], expected.to(steps.dtype), rtol=1e-4, atol=1e-4)


def diffused(pixels: torch.Tensor, eps: torch.Tensor, step: int) -> torch.Tensor:
    """VCD's vcd_add_noise.py written out: sigmoid schedule, cumprod, sqrt(abar) x + sqrt(1 - abar) eps."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5
    alphas_prod = torch.cumprod(1 - betas, 0)
    return torch.sqrt(alphas_prod[step]) * pixels + torch.sqrt(1 - alphas_prod[step]) * eps.to(pixels.device)


def closed_form_noise(pixels: torch.Tensor, step: int, seed: int) -> torch.Tensor:
    """The whole tensor noised from one generator seeded ``seed``."""
    return diffused(pixels, torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed)), step)


def closed_form_batch_noise(inputs: dict, step: int, seed: int) -> torch.Tensor:
    """The batch's ``pixel_values`` noised image by image, each from a generator seeded by (seed, its pixels)
    (``vasink.peers.noise.image_seed``): (N, C, H, W) one image per entry; (N, P, C, H, W) entry i's P images
    drawn one after the other; Qwen-VL's (patches, dim) cut into images by ``image_grid_thw``."""
    from vasink.peers.noise import image_seed

    pixels = inputs["pixel_values"]
    out = pixels.clone()
    if pixels.dim() == 2:
        ends = inputs["image_grid_thw"].prod(-1).cumsum(0).tolist()
        units = [[slice(start, end)] for start, end in zip([0, *ends[:-1]], ends)]
    elif pixels.dim() == 5:
        units = [[(i, j) for j in range(pixels.shape[1])] for i in range(pixels.shape[0])]
    else:
        units = [[i] for i in range(pixels.shape[0])]
    for unit in units:
        generator = torch.Generator().manual_seed(image_seed(seed, [pixels[k] for k in unit]))
        for k in unit:
            out[k] = diffused(pixels[k], torch.randn(pixels[k].shape, generator=generator), step)
    return out


@pytest.mark.parametrize("name", EXACT_FAMILIES)
def test_vcd_equals_reference(name):
    """(1 + alpha) l - alpha l_noised, -inf where l < log(beta) + max l, on every generated token; the second
    pass (own cache) equals recomputing the noised sequence without a cache."""
    family, model = FAMILIES[name], model_of(name)
    config = vasink.VCDConfig(alpha=1.5, beta=0.05, noise_step=500, seed=7)
    inputs = family.inputs(model, prompts_of(family))
    with vasink.var(model, config):
        tokens, steps = generate(model, inputs)
    full = extended(inputs, tokens, new_type=SUFFIX_TYPE.get(name, 0))
    noised = dict(full, pixel_values=closed_form_batch_noise(inputs, 500, seed=7))
    length = inputs["input_ids"].shape[1]
    position = slice(length - 1, length - 1 + NEW)
    clean = reference_logits(model, full, None)[:, position].double()
    contrast = reference_logits(model, noised, None)[:, position].double()
    expected = (1 + 1.5) * clean - 1.5 * contrast
    expected[clean < math.log(0.05) + clean.max(-1, keepdim=True).values] = -math.inf
    torch.testing.assert_close(steps, expected.to(steps.dtype), rtol=1e-4, atol=1e-4)


def test_vcd_noise_is_the_schedules_closed_form():
    from vasink.peers.noise import alpha_bar, noised_pixels

    assert math.sqrt(alpha_bar(500)) == pytest.approx(0.8630, abs=1e-4)  # PEERS: x_cd = 0.8630 x + 0.5052 eps
    assert math.sqrt(1 - alpha_bar(500)) == pytest.approx(0.5052, abs=1e-4)
    pixels = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for step in (0, 500, 999):
        got = noised_pixels(pixels, step, torch.Generator().manual_seed(3))
        torch.testing.assert_close(got, closed_form_noise(pixels, step, seed=3), rtol=0, atol=1e-6)
    half = noised_pixels(pixels.half(), 500, torch.Generator().manual_seed(3))
    assert half.dtype == torch.float16


def image_pieces(inputs: dict) -> list:
    """Indices of the entries of ``pixel_values``: dim 0 of (N, ..., C, H, W), Qwen-VL's patches cut by
    ``image_grid_thw``."""
    pixels = inputs["pixel_values"]
    if pixels.dim() == 2:
        ends = inputs["image_grid_thw"].prod(-1).cumsum(0).tolist()
        return [slice(start, end) for start, end in zip([0, *ends[:-1]], ends)]
    return list(range(pixels.shape[0]))


@pytest.mark.parametrize("name", [*EXACT_FAMILIES, "internvl", "idefics3", "mistral3"])
def test_vcd_noise_of_a_prompt_does_not_depend_on_its_batch(name):
    """A seeded prompt gets the same noised pixels and the same VCD answer alone and in a batch of 3 with other
    prompts, in another order (the noise of an image depends on the seed and its pixels only; Mistral 3 pads a
    batch's images to the largest, Idefics3 pads rows with empty images, InternVL lays out tiles)."""
    from vasink.peers.contrast import GRID_KEYS
    from vasink.peers.noise import noised_batch_pixels

    family, model = FAMILIES[name], model_of(name)
    first, second, third = prompts_of(family)
    config = vasink.VCDConfig(alpha=1.5, beta=0.05, seed=11)

    def noised(inputs):
        return noised_batch_pixels(inputs["pixel_values"], 500, 11, inputs.get(GRID_KEYS["pixel_values"]),
                                   inputs.get("image_sizes"))

    alone, batch = family.inputs(model, [second]), family.inputs(model, [third, second, first])
    pieces_alone, pieces = image_pieces(alone), image_pieces(batch)
    found = 0
    for piece in pieces_alone:  # each of the prompt's images (tiles, rows of images) found in the batch's tensor
        crop = tuple(slice(0, n) for n in alone["pixel_values"][piece].shape)
        match = [p for p in pieces if batch["pixel_values"][p][crop].shape == alone["pixel_values"][piece].shape
                 and torch.equal(batch["pixel_values"][p][crop], alone["pixel_values"][piece])]
        assert len(match) == 1
        torch.testing.assert_close(noised(batch)[match[0]][crop], noised(alone)[piece], rtol=0, atol=0)
        found += 1
    assert found >= 1
    with vasink.var(model, config):
        tokens_alone, steps_alone = generate(model, alone)
        tokens, steps = generate(model, batch)
    assert torch.equal(tokens[1], tokens_alone[0])
    torch.testing.assert_close(steps[1], steps_alone[0], rtol=1e-4, atol=1e-4)


# -- every family, every generate mode ---------------------------------------------------------------------

CONFIGS = {"pai": vasink.PAIConfig(alpha=0.5, gamma=2.0), "vaf": vasink.VAFConfig(image_scale=2.0),
           "vcd": vasink.VCDConfig(seed=1)}


@pytest.mark.parametrize("method", sorted(CONFIGS))
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_runs_every_method_and_off_is_bit_identical(name, method):
    """With the default (scaled) layers, a batch with every kind of visual input of the family (videos too):
    the method changes the logits, a static cache gives the same generation as the dynamic one, and after the
    block the model is exactly as loaded."""
    family, model = FAMILIES[name], model_of(name)
    inputs = family.inputs(model, family.prompts())
    stock = generate(model, inputs)
    with vasink.var(model, CONFIGS[method]):  # VCD's seeded noise is the same for the same pixels
        dynamic = generate(model, inputs)
        static = generate(model, inputs, cache_implementation="static")
    assert changed(dynamic[1], stock[1]), f"{method} must change {name}'s logits"
    assert torch.equal(dynamic[0], static[0])
    torch.testing.assert_close(dynamic[1], static[1], rtol=1e-4, atol=1e-4)
    after = generate(model, inputs)
    assert torch.equal(after[0], stock[0]) and torch.equal(after[1], stock[1])


@pytest.mark.parametrize("method", ["pai", "vcd"])
def test_second_pass_with_cache_equals_generation_without_cache(method):
    """generate(use_cache=False) recomputes both passes on the whole sequence at every step (PAI's attention
    edit off: without a cache it would reach only the newest row)."""
    family = FAMILIES["qwen2_vl"]
    model = model_of(family.name)
    inputs = family.inputs(model, prompts_of(family))
    config = vasink.PAIConfig(alpha=0.0, gamma=2.0) if method == "pai" else vasink.VCDConfig(seed=4)
    with vasink.var(model, config):
        cached = generate(model, inputs)
        uncached = generate(model, inputs, use_cache=False)
    assert torch.equal(cached[0], uncached[0])
    torch.testing.assert_close(cached[1], uncached[1], rtol=1e-4, atol=1e-4)


def test_beam_search_is_refused_while_a_second_pass_is_on():
    """PAI's guidance and VCD's contrast keep a cache generate does not reorder with the beams: generate refuses
    num_beams > 1 however it is asked (keyword, generation config, the model's default) and names the way out;
    greedy runs; VAF and PAI's attention edit alone (gamma 1) run with beams; the block restores generate."""
    from transformers import GenerationConfig

    family = FAMILIES["qwen2_vl"]
    model = model_of(family.name)
    inputs = family.inputs(model, prompts_of(family)[:2])
    for config in (vasink.VCDConfig(seed=1), vasink.PAIConfig(gamma=2.0)):
        with vasink.var(model, config):
            for how in ({"num_beams": 2}, {"generation_config": GenerationConfig(num_beams=3, max_new_tokens=2)}):
                with pytest.raises(ValueError, match=r"does not support beam search \(num_beams=[23]\).*"
                                                     r"num_beams=1, greedy \(do_sample=False\) or sampling"):
                    model.generate(**inputs, max_new_tokens=2, **how)
            model.generation_config.num_beams = 2
            try:
                with pytest.raises(ValueError, match="VAR, VAF and PAI with gamma=1"):
                    model.generate(**inputs, max_new_tokens=2)
            finally:
                model.generation_config.num_beams = 1
            assert generate(model, inputs)[0].shape == (2, NEW)
        assert "generate" not in model.__dict__
    for config in (vasink.VAFConfig(), vasink.PAIConfig(gamma=1.0)):
        with vasink.var(model, config):
            assert model.generate(**inputs, max_new_tokens=2, num_beams=2, do_sample=False).shape[0] == 2
    assert model.generate(**inputs, max_new_tokens=2, num_beams=2, do_sample=False).shape[0] == 2


def test_a_prompt_in_chunks_runs_only_where_it_gives_the_one_prefill_result():
    """generate(prefill_chunk_size=...) (Qwen2-VL pre-encodes its image, so transformers allows it): a later chunk
    that holds image placeholders is refused (the image spans are read at the first forward: VAF would act as
    the stock model there, PAI's no-image pass would keep the image tokens); PAI's attention edit is refused at
    any later chunk (it edits the last row of every forward). Chunks of text after the image give the one-prefill
    generation: VAF's edit and PAI's guidance alone. VCD's pixels cannot be chunked (transformers says so)."""
    from families_fixtures import BOS, Image

    model = model_of("qwen2_vl")
    inputs = FAMILIES["qwen2_vl"].inputs(model, [[BOS, 5, Image(1), 7, 8]])  # 10 tokens, the image at 2..7
    stock = generate(model, inputs)
    for config in (vasink.VAFConfig(image_scale=4.0, system_scale=0.2), vasink.PAIConfig(alpha=0.0, gamma=2.0)):
        with vasink.var(model, config):
            whole = generate(model, inputs)
            text_chunks = generate(model, inputs, prefill_chunk_size=8)  # [0:8] holds the image, [8:10] text
            with pytest.raises(RuntimeError, match=rf"{config.method.upper()} saw image placeholders.*"
                                                   r"prefill_chunk_size=None"):
                generate(model, inputs, prefill_chunk_size=3)
        assert changed(whole[1], stock[1])
        assert torch.equal(text_chunks[0], whole[0])
        torch.testing.assert_close(text_chunks[1], whole[1], rtol=1e-5, atol=1e-5)
    with vasink.var(model, vasink.PAIConfig(alpha=0.2, gamma=2.0)), \
            pytest.raises(RuntimeError, match="PAI edits the last row of each forward.*prefill_chunk_size=None"):
        generate(model, inputs, prefill_chunk_size=8)
    with vasink.var(model, vasink.VCDConfig(seed=1)), pytest.raises(ValueError, match="prefill_chunk_size=None"):
        generate(model, inputs, prefill_chunk_size=8)


@pytest.mark.parametrize("name", ["llava_next", "qwen2_vl", "qwen2_5_vl", "gemma3", "paligemma", "idefics3",
                                  "mistral3", "internvl"])
def test_vcd_paired_forward_equals_a_separate_second_pass(name):
    """VCD's main and noised rows as one forward of 2B rows over generate's cache: the same tokens and logits
    (prefill and every decode step, left-padded batch) as the separate second pass with its own cache, with a
    dynamic cache, a static one and none; each forward of the paired generation runs 2B rows."""
    family, model = FAMILIES[name], model_of(name)
    inputs = family.inputs(model, prompts_of(family))
    rows = inputs["input_ids"].shape[0]
    seen = []
    with vasink.var(model, vasink.VCDConfig(alpha=1.5, beta=0.05, seed=3)) as handle:
        # registered after vasink's: sees the rows the model runs
        hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape[0]),
                                               with_kwargs=True)
        try:
            assert handle.contrast.batch
            runs = {how: generate(model, inputs, **kwargs) for how, kwargs in
                    (("dynamic", {}), ("static", {"cache_implementation": "static"}), ("none", {"use_cache": False}))}
            paired_forwards = list(seen)
            # Qwen-VL's rope deltas stay the main rows' (generate reads them)
            assert all(m.rope_deltas is None or m.rope_deltas.shape[0] == rows for m in handle.contrast.stateful)
            handle.contrast.batch = False
            seen.clear()
            separate = generate(model, inputs)
        finally:
            hook.remove()
    assert paired_forwards == [2 * rows] * (3 * NEW)
    assert seen == [rows, rows] * NEW  # main forward, then the second pass
    for how, (tokens, steps) in runs.items():
        assert torch.equal(tokens, separate[0]), how
        torch.testing.assert_close(steps, separate[1], rtol=1e-4, atol=1e-4, msg=how)
