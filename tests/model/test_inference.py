"""The inference form of the scoring path equals the eval-mode network."""

from __future__ import annotations

import torch

from wtbi_monitor.model.inference import build_embedder
from wtbi_monitor.model.networks import IAENet, scoring_flops, spec_for


def test_folded_embedder_equals_eval_network():
    torch.manual_seed(0)
    net = IAENet(spec_for("small", 26, 26))
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics
        for _ in range(5):
            net.embed(torch.rand(64, 26, 26) * 2 + 0.3)
    net.eval()
    embedder = build_embedder(net)
    x = torch.rand(33, 26, 26)
    with torch.inference_mode():
        expected = net.embed(x)
        got = embedder(x)
        alone = embedder(x[5:6])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, got[5:6], rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in embedder.parameters())


def test_flops_follow_the_layer_shapes():
    paper = spec_for("paper", 26, 26)
    # conv 1->32 @32x32, 32->64 @16x16, 64->128 @8x8 (k=5); LSTM 2048->3x2048; proj 2048->128
    macs = 32 * 25 * 1024 + 32 * 64 * 25 * 256 + 64 * 128 * 25 * 64 + 2048 * 6144 + 2048 * 128
    assert scoring_flops(paper) == 2 * macs
    no_gates = spec_for("paper", 26, 26, input_gate=False, output_gate=False)
    assert scoring_flops(paper) - scoring_flops(no_gates) == 2 * 2 * 2048 * 2048
    assert scoring_flops(paper, with_decoder=True) > scoring_flops(paper)
