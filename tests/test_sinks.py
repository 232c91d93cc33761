import pytest
import torch
from transformers import LlamaConfig

from vasink import sink_dimension_value
from vasink.sinks import resolve_sink_dims


def test_phi_by_hand():
    x = torch.tensor([[[3.0, 4.0, 0.0, 0.0]]])  # RMS = sqrt(25/4 + 1e-6)
    phi = sink_dimension_value(x, [1])
    assert phi.shape == (1, 1)
    assert phi.item() == pytest.approx(4.0 / (25 / 4 + 1e-6) ** 0.5)
    assert sink_dimension_value(x, [0, 1]).item() == pytest.approx(4.0 / 2.5, rel=1e-6)


def test_phi_is_bounded_by_sqrt_hidden():
    x = torch.zeros(1, 2, 256)
    x[0, 0, 7] = 1000.0
    x[0, 1] = torch.randn(256)
    phi = sink_dimension_value(x, [7])
    assert phi[0, 0].item() == pytest.approx(16.0, rel=1e-4)
    assert phi[0, 1].item() < 5


def test_phi_rejects_out_of_range_dims():
    with pytest.raises(ValueError, match="out of range for hidden size 4"):
        sink_dimension_value(torch.zeros(1, 1, 4), [4])


def test_known_table_and_auto():
    llava7b = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=32064)
    assert resolve_sink_dims("auto", llava7b) == (1415, 2533)
    llama3 = LlamaConfig(hidden_size=4096, num_hidden_layers=32, vocab_size=128256)
    with pytest.raises(ValueError, match="find_sink_dims"):
        resolve_sink_dims("auto", llama3)
    with pytest.raises(ValueError, match="out of range for hidden size 4096"):
        resolve_sink_dims((5000,), llava7b)


def test_unreachable_tau_names_the_ceiling_and_the_way_out():
    from vasink.sinks import unreachable_tau

    assert unreachable_tau(15.9, 256) is None
    message = unreachable_tau(20.0, 256)
    assert "tau=20" in message and "sqrt(256) = 16.00" in message and "find_sink_dims" in message
    assert unreachable_tau(16.0, 256) is not None  # phi <= 16 and sinks need phi > tau
