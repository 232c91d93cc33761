"""VAR is the same under every way users call generate: dynamic cache, static cache, no cache, torch.compile.

Each mode is compared with the dynamic-cache run (the default path, checked against the reference path and
the oracle elsewhere): same tokens, step logits to 1e-5 in float32, and different from the stock model.
"""

import pytest
import torch
from conftest import BOS, SinkPlanter, batch_inputs, prompt_ids, tiny_llava
from families_fixtures import FAMILIES, Planter, planted_positions
from test_var_model import CONFIG

import vasink

TOLERANCE = dict(rtol=1e-5, atol=1e-5)
PROMPTS = {
    "one prompt, no mask": [prompt_ids()],  # transformers passes no attention mask at all
    "padded batch": [prompt_ids(), prompt_ids(prefix=(BOS, 5, 6), suffix=(7, 8))],
}


def run(model, inputs, new=4, **kwargs):
    """Greedy generate: (new tokens (B, new), logits of every step (B, new, V))."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, **kwargs)
    return out.sequences[:, inputs["input_ids"].shape[1]:], torch.stack(out.logits, dim=1)


def assert_same_run(got, want):
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], **TOLERANCE)


def assert_var_acts_on_every_step(var_run, stock_run):
    """VAR changes the prefill's logits and those of every decode step (so no step fell back to stock)."""
    change = (var_run[1] - stock_run[1]).abs().amax(dim=(0, 2))  # (new,)
    assert (change > 1e-4).all(), change


@pytest.fixture
def planted():
    model = tiny_llava()
    planter = SinkPlanter(model)
    yield model
    planter.remove()


@pytest.mark.parametrize("prompts", PROMPTS.values(), ids=PROMPTS.keys())
@pytest.mark.parametrize("implementation, attn", [("fast", "sdpa"), ("reference", "sdpa"), ("fast", "eager")])
def test_static_cache_equals_dynamic_cache(prompts, implementation, attn):
    """A static cache hands every layer all its slots (empty ones after the sequence, and no mask at the prefill)."""
    model = tiny_llava(attn_implementation=attn)
    planter = SinkPlanter(model)
    inputs = batch_inputs(prompts)
    stock = run(model, inputs)
    with vasink.var(model, CONFIG.replace(implementation=implementation)):
        dynamic = run(model, inputs)
        static = run(model, inputs, cache_implementation="static")
    planter.remove()
    assert_var_acts_on_every_step(dynamic, stock)
    assert_same_run(static, dynamic)


def test_static_cache_with_sliding_window_layers_equals_dynamic_cache():
    """Gemma 3: a static cache's sliding layers hold a window-sized buffer, then its rolled tail."""
    family = FAMILIES["gemma3"]
    model = family.build()
    planter = Planter(model, planted_positions())
    prompts = family.prompts()
    inputs = family.inputs(model, [prompts[0], prompts[1]])  # prompts[1] outruns the window of 12
    stock = run(model, inputs, new=3)
    with vasink.var(model, CONFIG):
        dynamic = run(model, inputs, new=3)
        static = run(model, inputs, new=3, cache_implementation="static")
    planter.remove()
    assert_var_acts_on_every_step(dynamic, stock)
    assert_same_run(static, dynamic)


class TokenSinkPlanter:
    """A token that is a sink wherever it appears (as "." or a newline often is in LLaMA models): a massive value
    in the sink dims at decoder layer 1's output, in every forward, prompt or generated token."""

    def __init__(self, model, token_id: int, factor: float = 60.0):
        self.token_id, self.factor, self.ids = token_id, factor, None
        self._hooks = [model.register_forward_pre_hook(self._on_model, with_kwargs=True),
                       model.model.language_model.layers[1].register_forward_hook(self._on_layer1)]

    def _on_model(self, module, args, kwargs):
        self.ids = kwargs["input_ids"]

    def _on_layer1(self, module, args, output):
        mask = self.ids == self.token_id  # (B, T): this forward's tokens
        rms = output.float().pow(2).mean(-1).sqrt()
        output = output.clone()
        for d in CONFIG.sink_dims:
            output[..., d] = torch.where(mask, (self.factor * rms).to(output.dtype), output[..., d])
        return output

    def remove(self):
        for hook in self._hooks:
            hook.remove()


@pytest.mark.parametrize("implementation", ["fast", "reference"])
def test_no_cache_reuses_the_prompts_sinks(planted, implementation):
    """generate(use_cache=False) feeds the whole sequence at every step: a generated token over tau is not a new
    sink (decode steps reuse the prompt's sinks), so the run equals the cached one."""
    inputs = batch_inputs(PROMPTS["padded batch"])
    config = CONFIG.replace(implementation=implementation)
    with vasink.var(planted, config):
        first_token = int(run(planted, inputs, new=1)[0][0, 0])
    assert first_token not in inputs["input_ids"].tolist()[0]
    token_sink = TokenSinkPlanter(planted, first_token)  # the first generated token is a sink-like token
    stock = run(planted, inputs)
    with vasink.var(planted, config) as handle:
        cached = run(planted, inputs)
        uncached = run(planted, inputs, use_cache=False)
        sinks = handle.last_sinks()
    token_sink.remove()
    assert cached[0][0, 0] == first_token
    assert_var_acts_on_every_step(cached, stock)
    assert_same_run(uncached, cached)
    assert all(mask.shape == inputs["input_ids"].shape for mask in sinks.values()), "the prompt's sinks"


def test_which_cache_free_forward_continues_the_prompt(planted):
    """A use_cache=False forward one token longer than the last, starting with the prompt, continues it; a
    forward without use_cache=False is a new prompt."""
    inputs, longer, other = (batch_inputs([prompt_ids() + extra]) for extra in ([], [3], [4]))  # same pixels
    ids = inputs["input_ids"]
    with vasink.var(planted, CONFIG) as handle, torch.no_grad():
        planted(**inputs, use_cache=False)
        planted(**longer, use_cache=False)
        assert handle.state.phase == "cache-free" and handle.last_sinks()[2].shape == ids.shape
        planted(**inputs, use_cache=False)
        planted(**longer)  # not a cache-free step: a new prompt, whose last token may be a sink
        assert handle.state.phase == "prefill" and handle.last_sinks()[2].shape == longer["input_ids"].shape
        planted(**inputs, use_cache=False)
        planted(**other, use_cache=False)  # another token after the same prompt: a step of a new generation
        assert handle.state.phase == "cache-free"
