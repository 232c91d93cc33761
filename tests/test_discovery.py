import math

import pytest
import torch
from conftest import SINK_DIMS, SinkPlanter, tiny_llava, tiny_processor

import vasink
from vasink.discovery import build_prompt_inputs, calibration_images


def test_processor_builds_image_tokens():
    processor = tiny_processor()
    inputs = build_prompt_inputs(processor, calibration_images(28)[2], "Describe the image.")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(99) == 16 and ids[0] == 1
    assert 3 not in ids, "every prompt word is in the vocabulary"


def test_find_sink_dims_recovers_planted_dims():
    model = tiny_llava()
    planter = SinkPlanter(model, patches=(1,))
    found = vasink.find_sink_dims(model, tiny_processor())
    planter.remove()
    assert found.dims == SINK_DIMS
    assert found.frequency[list(SINK_DIMS)].min() == 1.0
    assert found.first_token_ratio.shape == (4, 5, 64)
    # planted BOS phi is about sqrt(64 / 2) ~ 5.7; ordinary tokens near 2: the suggestion sits between
    assert 2.5 < found.suggested_tau < 5.5
    assert math.isfinite(found.suggested_tau)
    assert "dim 5" in found.summary()
    # the suggestion is usable: detect_sinks with it finds BOS and the planted patch
    config = vasink.VARConfig(sink_dims=found.dims, tau=found.suggested_tau)
    planter = SinkPlanter(model, patches=(1,))
    inputs = build_prompt_inputs(tiny_processor(), calibration_images(28)[0], "what is in the picture ?")
    report = vasink.detect_sinks(model, inputs, config)
    planter.remove()
    assert report[2].sink_positions() == [0, 4]


def test_no_massive_dims_in_a_random_model():
    found = vasink.find_sink_dims(tiny_llava(), tiny_processor())
    assert found.dims == ()
    assert math.isnan(found.suggested_tau)
    assert found.summary().startswith("no sink dimension found") and "nan" not in found.summary()


def test_empty_prompts_is_an_error():
    with pytest.raises(ValueError, match="at least one prompt"):
        vasink.find_sink_dims(tiny_llava(), tiny_processor(), prompts=[])


def test_find_sink_dims_reads_the_bos_after_paligemmas_image_tokens():
    """PaliGemma's prompt is ``[image tokens] <bos> prefix``: the BOS-like token is not token 0."""
    from families_fixtures import BOS, FAMILIES, Planter, paligemma_processor

    model = FAMILIES["paligemma"].build()
    processor = paligemma_processor()
    inputs = build_prompt_inputs(processor, calibration_images(28)[0], "describe the image")
    assert inputs["input_ids"][0, 0] != BOS and BOS in inputs["input_ids"][0].tolist()
    planter = Planter(model, lambda input_ids, attention_mask: input_ids == BOS)  # sink dims on <bos> only
    try:
        found = vasink.find_sink_dims(model, processor)
    finally:
        planter.remove()
    assert found.dims == SINK_DIMS
    assert found.first_token_phi[:, 2:].min() > 2 * found.median_token_phi[:, 2:].max()
