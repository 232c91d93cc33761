import pytest
import torch

from vasink import VARConfig


def test_defaults_are_the_papers_general_setting():
    config = VARConfig()
    assert (config.tau, config.rho, config.p, config.min_visual_attention) == (20.0, 0.8, 0.6, 0.2)
    assert config == VARConfig.preset("general")
    assert config.sink_dims == "auto" and config.compat == "paper" and config.implementation == "fast"
    assert config.removed_fraction == pytest.approx(0.6)


@pytest.mark.parametrize("name, rho", [("general", 0.8), ("hallucination", 0.5), ("vision-centric", 0.9)])
def test_presets(name, rho):
    assert VARConfig.preset(name).rho == rho
    assert VARConfig.preset(name, p=0.3).p == 0.3
    assert VARConfig(p=0.3).with_preset(name, p=None).p == 0.6  # a preset is the paper's rho and p


@pytest.mark.parametrize("name, code_rho", [("general", 0.2), ("hallucination", 0.5), ("vision-centric", 0.1)])
def test_a_preset_means_the_same_in_released_code_mode(name, code_rho):
    """The released code reads rho as the visual sink ratio's bound and p as the kept fraction: a preset is
    converted, so it selects the same heads and moves the same share in both modes."""
    paper = VARConfig.preset(name)
    code = VARConfig.preset(name, compat="released-code")
    assert code.compat == "released-code" and code.rho == code_rho and code.p == pytest.approx(0.4)
    assert code.removed_fraction == pytest.approx(paper.removed_fraction)
    assert VARConfig(compat="released-code").with_preset(name) == code
    assert VARConfig().with_preset(name, compat="released-code") == code
    # values given beside the preset are the mode's own, as the code's config files write them
    assert VARConfig.preset(name, compat="released-code", rho=0.5, p=0.6).removed_fraction == pytest.approx(0.4)


def test_preset_head_test_agrees_across_modes():
    from vasink.redistribute import select_rows

    visual_mass = torch.tensor([0.5, 0.5, 0.5, 0.5])
    visual_sink_mass = torch.tensor([0.02, 0.09, 0.11, 0.3])  # non-sink ratios 0.96, 0.82, 0.78, 0.4
    for name in ("general", "hallucination", "vision-centric"):
        rows = {}
        for compat in ("paper", "released-code"):
            config = VARConfig.preset(name, compat=compat)
            rows[compat] = select_rows(visual_mass, visual_sink_mass, torch.tensor(1.0), rho=config.rho,
                                       min_visual_attention=config.min_visual_attention, compat=compat)
        assert torch.equal(rows["paper"], rows["released-code"]), name


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
