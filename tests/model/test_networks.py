"""The networks: shapes, padding, the single-step LSTM, ablation switches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wtbi_monitor.errors import ConfigurationError
from wtbi_monitor.model.networks import (
    IAENet,
    NetworkSpec,
    SingleStepLSTM,
    count_parameters,
    spec_for,
)


def test_paper_spec_pads_26_to_32_and_flattens_to_2048():
    spec = spec_for("paper", 26, 26)
    assert spec.padded_shape == (32, 32)
    assert spec.padding == (3, 3, 3, 3)
    assert spec.feature_dim == 2048
    z, recon = IAENet(spec).eval()(torch.rand(3, 26, 26))
    assert z.shape == (3, 128)
    assert recon is not None
    assert recon.shape == (3, 26, 26)


def test_window_length_need_not_equal_channel_count():
    spec = spec_for("small", 40, 26)
    assert spec.padded_shape == (40, 32)
    assert spec.padding == (3, 3, 0, 0)
    z, recon = IAENet(spec).eval()(torch.rand(2, 40, 26))
    assert recon is not None
    assert recon.shape == (2, 40, 26)
    assert z.shape == (2, spec.rep_dim)


def test_decoder_expands_a_rep_dim_it_cannot_reshape():
    spec = NetworkSpec(window_length=26, n_channels=26, conv_channels=(4, 8, 8), rep_dim=100)
    net = IAENet(spec).eval()
    assert net.decoder is not None
    assert net.decoder.expand is not None  # 100 is not a multiple of 4 x 4
    assert IAENet(spec_for("paper", 26, 26)).decoder.expand is None  # type: ignore[union-attr]
    _, recon = net(torch.rand(2, 26, 26))
    assert recon is not None
    assert recon.shape == (2, 26, 26)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="unknown size preset"):
        spec_for("huge", 26, 26)


def test_encoder_and_projection_have_no_biases():
    net = IAENet(spec_for("small", 26, 26))
    for name, _ in net.encoder.named_parameters():
        assert not name.endswith("bias")
    assert net.projection.bias is None


def test_single_step_lstm_equals_nn_lstm_on_sequences_of_length_one():
    torch.manual_seed(0)
    dim, hidden = 12, 8
    reference = nn.LSTM(dim, hidden)
    cell = SingleStepLSTM(dim, hidden)
    with torch.no_grad():
        i, _f, g, o = reference.weight_ih_l0.chunk(4)  # PyTorch gate order: i, f, g, o
        bi, _bf, bg, bo = (reference.bias_ih_l0 + reference.bias_hh_l0).chunk(4)
        cell.gates.weight.copy_(torch.cat([i, g, o]))
        cell.gates.bias.copy_(torch.cat([bi, bg, bo]))
    x = torch.randn(5, dim)
    expected, _ = reference(x.unsqueeze(0))  # (seq_len=1, batch=5, dim): each window alone
    torch.testing.assert_close(cell(x), expected[0])


def test_gate_ablations_remove_parameters_and_change_the_forward_path():
    full = SingleStepLSTM(16, 16)
    no_in = SingleStepLSTM(16, 16, input_gate=False)
    none = SingleStepLSTM(16, 16, input_gate=False, output_gate=False)
    per_gate = 16 * 16 + 16
    assert count_parameters(full) - count_parameters(no_in) == per_gate
    assert count_parameters(full) - count_parameters(none) == 2 * per_gate
    x = torch.randn(4, 16)
    # without gates the cell is h = tanh(tanh(W_g x + b_g))
    expected = torch.tanh(torch.tanh(none.gates(x)))
    torch.testing.assert_close(none(x), expected)


def test_lstm_and_decoder_switches_change_parameter_counts():
    full = IAENet(spec_for("small", 26, 26))
    no_lstm = IAENet(spec_for("small", 26, 26, use_lstm=False))
    no_decoder = IAENet(spec_for("small", 26, 26, use_decoder=False))
    assert no_lstm.lstm is None
    assert no_decoder.decoder is None
    f = full.spec.feature_dim
    assert count_parameters(full) - count_parameters(no_lstm) == 3 * (f * f + f)
    assert count_parameters(no_decoder) < count_parameters(full)
    z, recon = no_decoder.eval()(torch.rand(2, 26, 26))
    assert recon is None
    assert z.shape == (2, 32)
