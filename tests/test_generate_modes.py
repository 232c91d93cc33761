"""VAR is the same under every way users call generate: dynamic cache, static cache, no cache, torch.compile.

Each mode is compared with the dynamic-cache run (the default path, checked against the reference path and
the oracle elsewhere): same tokens, step logits to 1e-5 in float32, and different from the stock model.
"""

import os

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



@pytest.mark.parametrize("prompts", PROMPTS.values(), ids=PROMPTS.keys())
@pytest.mark.parametrize("implementation, attn", [("fast", "sdpa"), ("reference", "sdpa"), ("fast", "eager")])
def test_static_cache_equals_dynamic_cache(prompts, implementation, attn):
    """A static cache hands every layer all its slots (empty ones after the sequence, and no mask at the prefill)."""
    model = tiny_llava(attn_implementation=attn)
    planter = SinkPlanter(model)
    inputs = batch_inputs(prompts)
    stock = run(model, inputs)
    with vasink.var(model, CONFIG.replace(implementation=implementation)) as handle:
        dynamic = run(model, inputs)
        static = run(model, inputs, cache_implementation="static")
        padding_seen = handle.state.valid_keys  # read from generate's 4D static-cache mask
    planter.remove()
    assert_var_acts_on_every_step(dynamic, stock)
    assert_same_run(static, dynamic)
    assert torch.equal(padding_seen, inputs["attention_mask"].bool())


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


def test_beam_search_is_the_same_under_every_cache(planted):
    """Beams reorder rows between steps; every beam of a prompt has that prompt's sinks."""
    inputs = batch_inputs(PROMPTS["padded batch"])

    def beams(**kwargs):
        with torch.no_grad():
            out = planted.generate(**inputs, max_new_tokens=4, do_sample=False, num_beams=3,
                                   output_scores=True, return_dict_in_generate=True, **kwargs)
        return out.sequences, out.sequences_scores

    stock = beams()
    with vasink.var(planted, CONFIG):
        dynamic = beams()
        static = beams(cache_implementation="static")
        uncached = beams(use_cache=False)
    assert (dynamic[1] - stock[1]).abs().max() > 1e-3
    for run_ in (static, uncached):
        assert_same_run(run_, dynamic)


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


# -- torch.compile: backend="eager" runs exactly what dynamo captures (graph breaks, guards, the state's side
#    effects); inductor compiles the same graphs to C++ (slow on a small CPU: VASINK_SLOW_TESTS=1 runs it).

COMPILED = dict(new=2, cache_implementation="static")


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()  # no compiled code or recompile counts left from another test
    yield
    torch._dynamo.reset()


def compiled_runs(backend: str):
    """(eager stock, eager VAR with a dynamic cache, compiled stock, compiled VAR, compiled after disable) on one
    planted model; the forward is compiled before VAR is enabled, as a user who compiles at load time does."""
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    stock = run(model, inputs, **COMPILED)
    with vasink.var(model, CONFIG):
        var_run = run(model, inputs, new=COMPILED["new"])
    model.forward = torch.compile(model.forward, backend=backend)
    compiled_stock = run(model, inputs, **COMPILED)
    with vasink.var(model, CONFIG):
        compiled_var = run(model, inputs, **COMPILED)
    after = run(model, inputs, **COMPILED)
    planter.remove()
    return stock, var_run, compiled_stock, compiled_var, after


def test_compiled_forward_runs_var(fresh_dynamo):
    stock, var_run, compiled_stock, compiled_var, after = compiled_runs("eager")
    assert_var_acts_on_every_step(var_run, stock)
    assert_same_run(compiled_var, var_run)
    assert_same_run(compiled_stock, stock)
    assert_same_run(after, stock)


def test_generate_compile_config_runs_var(fresh_dynamo):
    """generate compiles the model's call itself for a static cache and a compile_config (on CPU only when told)."""
    from transformers import CompileConfig

    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs(PROMPTS["padded batch"])
    compile_config = CompileConfig(backend="eager", mode=None)
    compile_config._compile_all_devices = True  # transformers' switch for compiling on CPU
    with vasink.var(model, CONFIG):
        dynamic = run(model, inputs, new=3)
        compiled = run(model, inputs, new=3, cache_implementation="static", compile_config=compile_config)
    planter.remove()
    assert hasattr(model, "_compiled_call"), "generate must have compiled the forward"
    assert_same_run(compiled, dynamic)


@pytest.mark.skipif(os.environ.get("VASINK_SLOW_TESTS") != "1",
                    reason="inductor's first compile takes 80 s on a 2-core CPU; set VASINK_SLOW_TESTS=1")
def test_inductor_compiled_forward_runs_var(fresh_dynamo):
    """The same graphs compiled to C++ by inductor (VAR's run only: the stock compile is the eager test's)."""
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    with vasink.var(model, CONFIG):
        want = run(model, inputs, new=COMPILED["new"])
        model.forward = torch.compile(model.forward, backend="inductor")
        got = run(model, inputs, **COMPILED)
    planter.remove()
    assert_same_run(got, want)


def test_var_on_a_compiled_module(fresh_dynamo):
    """torch.compile(model) returns a wrapper: enable reaches the model inside, and the compiled call runs VAR."""
    model = tiny_llava()
    planter = SinkPlanter(model)
    inputs = batch_inputs([prompt_ids()])
    with torch.no_grad():
        stock = model(**inputs).logits
        with vasink.var(model, CONFIG):
            want = model(**inputs).logits
        compiled = torch.compile(model, backend="eager")
        with vasink.var(compiled, CONFIG) as handle:
            got = compiled(**inputs).logits
        assert handle.model is model and not handle.active
    planter.remove()
    assert (want - stock).abs().max() > 1e-3
    torch.testing.assert_close(got, want, **TOLERANCE)
