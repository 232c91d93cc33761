import pytest

from vasink import VARConfig


def test_defaults_follow_the_paper():
    config = VARConfig()
    assert (config.tau, config.rho, config.p, config.min_visual_attention) == (20.0, 0.5, 0.6, 0.2)
    assert config.sink_dims == "auto" and config.compat == "paper" and config.implementation == "fast"
    assert config.removed_fraction == pytest.approx(0.6)


@pytest.mark.parametrize("name, rho", [("general", 0.8), ("hallucination", 0.5), ("vision-centric", 0.9)])
def test_presets(name, rho):
    assert VARConfig.preset(name).rho == rho
    assert VARConfig.preset(name, p=0.3).p == 0.3


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match="general"):
        VARConfig.preset("generic")


@pytest.mark.parametrize("field, value, fragment", [
    ("rho", 1.5, r"rho=1.5 is out of range; valid range is \[0.0, 1.0\]"),
    ("p", -0.1, r"p=-0.1 is out of range"),
    ("tau", 0, r"tau=0 is out of range; valid range is \(0.0"),
    ("min_visual_attention", 2, "min_visual_attention"),
    ("compat", "released", "compat"),
    ("implementation", "flash", "implementation"),
    ("sink_dims", [], "sink_dims"),
    ("sink_dims", [-1], "sink_dims"),
    ("sink_dims", "some", "sink_dims"),
    ("layers", [-2], "layers"),
])
def test_out_of_range_values_name_the_field(field, value, fragment):
    with pytest.raises(ValueError, match=fragment):
        VARConfig(**{field: value})


def test_released_code_reads_p_as_kept_fraction():
    assert VARConfig(p=0.6, compat="released-code").removed_fraction == pytest.approx(0.4)


def test_modified_layers():
    assert VARConfig().modified_layers(6) == (2, 3, 4)
    assert VARConfig(except_last_layer=False).modified_layers(6) == (2, 3, 4, 5)
    # the released code's shadowed flag: the last layer is modified even when asked not to be
    assert VARConfig(compat="released-code").modified_layers(6) == (2, 3, 4, 5)
    assert VARConfig(layers=(1, 5)).modified_layers(6) == (1,)
    with pytest.raises(ValueError, match="out of range"):
        VARConfig(layers=(7,)).modified_layers(6)
