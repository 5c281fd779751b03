"""The scoring options on CPU: fp32 unchanged, bf16 within tolerance, the CUDA buckets'
padding and the graph cache's bookkeeping (the CUDA runs themselves: test_gpu.py)."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tests.model.scoring_helpers import assert_bf16_close, clone, fitted_random
from wtbi_monitor.config import ModelSettings
from wtbi_monitor.errors import ConfigurationError
from wtbi_monitor.model import build_detector, load_bundle
from wtbi_monitor.model.inference import build_embedder
from wtbi_monitor.model.losses import reconstruction_error, squared_distance
from wtbi_monitor.model.neural import (
    INFERENCE_BATCH,
    PRECISIONS,
    ReconstructionDetector,
    SVDDDetector,
    _CapturedForward,
    _Forward,
    bucket_size,
    pad_rows,
)

#: (member, score) of the SVDD scoring paths: the product score with a decoder, the
#: decoder-less product score (Mahalanobis of encoder features), the paper's distance.
PATHS = [
    ("iae_lstm_kl:soft", "product"),
    ("dlsvdd_kl:soft", "product"),
    ("iae_lstm_kl:soft", "paper"),
]


def test_the_settings_offer_the_detectors_precisions():
    assert get_args(ModelSettings.model_fields["precision"].annotation) == PRECISIONS
    assert ModelSettings().precision == "fp32"
    assert ModelSettings().cuda_graphs is True
    assert ModelSettings(precision="bf16").precision == "bf16"
    with pytest.raises(ValidationError):
        ModelSettings(precision="fp16")  # type: ignore[arg-type]


def test_bucket_size_is_the_next_power_of_two_within_bounds():
    assert [bucket_size(n) for n in (1, 63, 64, 65, 128, 129, 600, 1023, 1024)] == [
        64,
        64,
        64,
        128,
        128,
        256,
        1024,
        1024,
        1024,
    ]
    assert bucket_size(3, smallest=1, largest=8) == 4
    assert bucket_size(5, smallest=1, largest=6) == 6  # the largest bucket caps it
    for bad in (0, INFERENCE_BATCH + 1):
        with pytest.raises(ValueError, match="rows"):
            bucket_size(bad)


def test_pad_rows_appends_zero_rows_and_keeps_the_real_ones():
    batch = torch.rand(5, 3, 2)
    padded = pad_rows(batch, 8)
    assert padded.shape == (8, 3, 2)
    assert torch.equal(padded[:5], batch)
    assert not padded[5:].any()
    assert pad_rows(batch, 5) is batch
    with pytest.raises(ValueError, match="pad"):
        pad_rows(batch, 4)
    out = _Forward(padded, None).rows(5)
    assert torch.equal(out.z, batch)
    assert out.recon is None


def test_fp32_scores_equal_the_direct_computation(soft_iae, tiny_windows):
    """fp32 (the default) is the scoring path as it was: folded embedder, distance,
    decoder, standardisation, bit for bit."""
    _, held_out = tiny_windows
    detector = clone(soft_iae)
    assert detector.precision == "fp32"
    stats = detector._module.score_stats
    x = torch.from_numpy(held_out)
    with torch.inference_mode():
        z = build_embedder(detector.net)(x)
        d = squared_distance(z, detector.center_).double()
        r = reconstruction_error(x, detector.net.decode(z)).double()
        expected = ((d - stats[0]) / stats[1] + (r - stats[2]) / stats[3]).numpy()
    assert np.array_equal(detector.score(held_out), expected)
    assert np.array_equal(detector.score(held_out), soft_iae.score(held_out))


def test_bf16_scores_are_within_tolerance_of_fp32_on_a_trained_model(soft_iae, tiny_windows):
    _, held_out = tiny_windows
    detector = clone(soft_iae)
    fp32 = detector.score_details(held_out)
    detector.set_inference(precision="bf16")
    bf16 = detector.score_details(held_out)
    assert not np.array_equal(bf16.score, fp32.score)  # bf16 really ran
    assert_bf16_close(fp32.score, bf16.score)
    assert fp32.channel_error is not None
    assert bf16.channel_error is not None
    assert np.isfinite(bf16.channel_error).all()
    np.testing.assert_allclose(
        bf16.channel_error, fp32.channel_error, rtol=0, atol=0.02 * fp32.channel_error.max()
    )
    detector.set_inference(precision="fp32")
    assert np.array_equal(detector.score(held_out), fp32.score)


@pytest.mark.parametrize(("member", "score"), PATHS[1:])
def test_bf16_scores_are_within_tolerance_on_the_other_paths(member, score, tiny_windows):
    train, held_out = tiny_windows
    detector = fitted_random(member, train, score=score)
    fp32 = detector.score(held_out)
    detector.set_inference(precision="bf16")
    bf16 = detector.score(held_out)
    assert not np.array_equal(bf16, fp32), "bf16 must really run"
    assert_bf16_close(fp32, bf16)


def test_bf16_reconstruction_scores_are_within_tolerance(tiny_windows):
    _, held_out = tiny_windows
    torch.manual_seed(0)
    detector = build_detector("cae", ModelSettings(preset="small"), window_length=26, n_channels=26)
    assert isinstance(detector, ReconstructionDetector)
    detector.module.eval()
    detector.fitted_ = True  # random weights: the score is still a reconstruction error
    fp32 = detector.score(held_out)
    detector.set_inference(precision="bf16")
    bf16 = detector.score(held_out)
    assert not np.array_equal(bf16, fp32), "bf16 must really run"
    assert_bf16_close(fp32, bf16)


@pytest.mark.parametrize(("member", "score"), PATHS)
@pytest.mark.parametrize("rows", [1, 37, 64, 100])
def test_padding_to_a_bucket_changes_no_score(member, score, rows, tiny_windows, monkeypatch):
    """The CUDA path's padding, run on CPU: real rows score as without padding."""
    train, held_out = tiny_windows
    detector = fitted_random(member, train, score=score)
    windows = held_out[:rows]
    plain = detector.score_details(windows, with_channels=True)
    monkeypatch.setattr(
        detector,
        "_forward_rows",
        lambda batch: detector._padded_forward(batch, bucket_size(batch.shape[0])),
    )
    padded = detector.score_details(windows, with_channels=True)
    np.testing.assert_allclose(padded.score, plain.score, rtol=1e-6, atol=1e-6)
    assert padded.channel_error is not None
    assert plain.channel_error is not None
    np.testing.assert_allclose(padded.channel_error, plain.channel_error, rtol=1e-6, atol=1e-7)


class _StandInGraph:
    """Replays `_network_forward` eagerly into the static outputs, like a CUDA graph."""

    def __init__(self, detector: SVDDDetector, windows: torch.Tensor, out: _Forward) -> None:
        self.detector, self.windows, self.out, self.replays = detector, windows, out, 0

    def replay(self) -> None:
        fresh = self.detector._network_forward(self.windows)
        self.out.z.copy_(fresh.z)
        if self.out.recon is not None and fresh.recon is not None:
            self.out.recon.copy_(fresh.recon)
        self.replays += 1


def test_graph_replay_bookkeeping_with_a_stand_in_graph(tiny_windows, monkeypatch):
    """Static input filled and its padding zeroed, one capture per (bucket, precision),
    the padding sliced off, the cache dropped with the weights' derived forms."""
    train, held_out = tiny_windows
    detector = fitted_random("iae_lstm_kl:soft", train)
    captures: list[int] = []

    def capture(size: int, like: torch.Tensor) -> _CapturedForward:
        captures.append(size)
        windows = like.new_zeros((size, *like.shape[1:]))
        out = detector._network_forward(windows)
        graph = _StandInGraph(detector, windows, out)
        return _CapturedForward(graph, windows, out)  # type: ignore[arg-type]

    monkeypatch.setattr(detector, "_capture", capture)
    x = torch.from_numpy(held_out)
    with torch.inference_mode():
        eager = detector._network_forward(x[:100])
        first = detector._replay(x[:100], 128)
        assert torch.equal(first.z, eager.z)
        assert first.recon is not None
        assert eager.recon is not None
        assert torch.equal(first.recon, eager.recon)
        second = detector._replay(x[:3], 128)  # stale rows 3..99 of the last batch: zeroed
        assert torch.equal(second.z, eager.z[:3])
        assert not detector._graphs[128, "fp32"].windows[3:].any()
        detector._replay(x[:50], 64)
    assert captures == [128, 64]
    assert set(detector._graphs) == {(128, "fp32"), (64, "fp32")}
    detector.set_inference(precision="bf16")
    assert detector._graphs == {}
    assert detector._embedder is None
    with torch.inference_mode():
        detector._replay(x[:50], 64)
    assert set(detector._graphs) == {(64, "bf16")}
    detector.to(torch.device("cpu"))
    assert detector._graphs == {}


def test_cpu_scoring_neither_pads_nor_captures(tiny_windows, monkeypatch):
    train, held_out = tiny_windows
    detector = fitted_random("iae_lstm_kl:soft", train)

    def forbidden(*args: object) -> None:
        raise AssertionError(args)

    monkeypatch.setattr(detector, "_padded_forward", forbidden)
    monkeypatch.setattr(detector, "_replay", forbidden)
    assert np.isfinite(detector.score(held_out[:10])).all()


def test_set_inference_rejects_an_unknown_precision(tiny_windows):
    detector = fitted_random("iae_lstm_kl:soft", tiny_windows[0])
    with pytest.raises(ConfigurationError, match="precision"):
        detector.set_inference(precision="fp16")  # type: ignore[arg-type]


def test_load_bundle_applies_the_inference_options(tiny_bundle):
    bundle = load_bundle(tiny_bundle.path, precision="bf16", cuda_graphs=False)
    detector = bundle.detector
    assert isinstance(detector, SVDDDetector)
    assert detector.precision == "bf16"
    assert detector.cuda_graphs is False
    default = load_bundle(tiny_bundle.path).detector
    assert isinstance(default, SVDDDetector)
    assert default.precision == "fp32"
    assert default.cuda_graphs is True
