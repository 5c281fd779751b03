"""The CUDA scoring path: equal to CPU in fp32, graphs equal to eager, bf16 within
tolerance, pinned host buffers. Marked `gpu`: skipped without a CUDA device
(tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.model.scoring_helpers import (
    BF16_MAX_DIFF_OF_STD,
    assert_bf16_close,
    clone,
    fitted_random,
)
from wtbi_monitor.model.neural import INFERENCE_BATCH, bucket_size

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
#: Row counts: the smallest bucket, both sides of a bucket's edge, a larger bucket.
ROWS = (1, 37, 64, 65, 300)


@pytest.fixture
def strict_fp32(monkeypatch):
    """No TF32 in cuDNN convolutions or matmuls (torch allows it in convolutions by
    default), so CUDA and CPU compute in the same precision."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _windows(held_out: np.ndarray, rows: int) -> np.ndarray:
    reps = -(-rows // held_out.shape[0])
    return np.ascontiguousarray(np.concatenate([held_out] * reps)[:rows])


@pytest.mark.parametrize("graphs", [False, True])
def test_cuda_scores_equal_cpu_scores(soft_iae, tiny_windows, strict_fp32, graphs):
    _, held_out = tiny_windows
    cpu = clone(soft_iae)
    cuda = clone(soft_iae, CUDA).set_inference(cuda_graphs=graphs)
    assert cuda.device.type == "cuda"
    for rows in ROWS:
        windows = _windows(held_out, rows)
        want = cpu.score_details(windows)
        got = cuda.score_details(windows)
        np.testing.assert_allclose(got.score, want.score, rtol=1e-4, atol=1e-4)
        assert got.channel_error is not None
        assert want.channel_error is not None
        np.testing.assert_allclose(got.channel_error, want.channel_error, rtol=1e-4, atol=1e-6)
    assert bool(cuda._graphs) is graphs


@pytest.mark.parametrize(
    ("member", "score"), [("dlsvdd_kl:soft", "product"), ("iae_lstm_kl:soft", "paper")]
)
def test_cuda_scores_equal_cpu_scores_on_the_other_paths(member, score, tiny_windows, strict_fp32):
    """The decoder-less product score (Mahalanobis of encoder features, gradient
    attribution) and the paper's distance (decoding for the channels only). The
    Mahalanobis distance amplifies rounding most: a looser relative tolerance."""
    train, held_out = tiny_windows
    cpu = fitted_random(member, train, score=score)
    cpu.calibrate(held_out, 0.01)
    cuda = clone(cpu, CUDA)
    want = cpu.score_details(held_out)
    got = cuda.score_details(held_out)
    np.testing.assert_allclose(got.score, want.score, rtol=5e-4, atol=1e-4)
    assert got.channel_error is not None
    assert want.channel_error is not None
    np.testing.assert_allclose(
        got.channel_error, want.channel_error, rtol=1e-3, atol=1e-3 * want.channel_error.max()
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graph_path_equals_the_eager_cuda_path(soft_iae, tiny_windows, strict_fp32, precision):
    """The same padded shapes, captured or not: equal up to float rounding (the library
    may pick other kernels inside a capture; in bf16 that moves a result by whole bf16
    steps, hence the bf16 tolerance there), and a bucket replayed with fewer rows than
    before gives the same scores (its padding is reset)."""
    _, held_out = tiny_windows
    eager = clone(soft_iae, CUDA).set_inference(precision=precision, cuda_graphs=False)
    graphs = clone(soft_iae, CUDA).set_inference(precision=precision, cuda_graphs=True)
    if precision == "fp32":
        rtol, atol, channel_share = 1e-5, 1e-5, 1e-6
    else:
        rtol, atol, channel_share = 0.0, BF16_MAX_DIFF_OF_STD * np.std(eager.score(held_out)), 0.02
    for rows in (*ROWS, 37):  # 37 again: bucket 64 replayed after 64 and 65 rows
        windows = _windows(held_out, rows)
        want = eager.score_details(windows)
        got = graphs.score_details(windows)
        np.testing.assert_allclose(got.score, want.score, rtol=rtol, atol=atol)
        assert got.channel_error is not None
        assert want.channel_error is not None
        np.testing.assert_allclose(
            got.channel_error,
            want.channel_error,
            rtol=rtol,
            atol=channel_share * want.channel_error.max(),
        )
    buckets = {bucket_size(r) for r in ROWS}
    assert set(graphs._graphs) == {(b, precision) for b in buckets}
    assert not eager._graphs


def test_more_rows_than_a_chunk_use_the_largest_bucket(soft_iae, tiny_windows, strict_fp32):
    _, held_out = tiny_windows
    windows = _windows(held_out, INFERENCE_BATCH + 5)
    cuda = clone(soft_iae, CUDA)
    np.testing.assert_allclose(
        cuda.score(windows), clone(soft_iae).score(windows), rtol=1e-4, atol=1e-4
    )
    assert set(cuda._graphs) == {(INFERENCE_BATCH, "fp32"), (64, "fp32")}
    # A direct call above the largest bucket runs eagerly, unpadded.
    x = torch.from_numpy(windows).to(CUDA)
    with torch.inference_mode():
        score, _ = cuda._score_batch(x, with_channels=False)
    np.testing.assert_allclose(score.cpu().numpy(), cuda.score(windows), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("graphs", [False, True])
def test_bf16_on_cuda_is_within_tolerance(soft_iae, tiny_windows, strict_fp32, graphs):
    _, held_out = tiny_windows
    cpu = clone(soft_iae)
    cuda = clone(soft_iae, CUDA).set_inference(precision="bf16", cuda_graphs=graphs)
    fp32 = cpu.score(held_out)
    bf16 = cuda.score(held_out)
    assert not np.array_equal(bf16, fp32)
    assert_bf16_close(fp32, bf16)


def test_host_windows_are_pinned_for_the_copy(soft_iae, tiny_windows):
    _, held_out = tiny_windows
    cuda = clone(soft_iae, CUDA)
    assert cuda._host_tensor(held_out[:8]).is_pinned()
    moved = cuda._as_tensor(held_out[:8])
    assert moved.device.type == "cuda"
    torch.testing.assert_close(moved.cpu(), torch.from_numpy(held_out[:8]), rtol=0, atol=0)
    assert not clone(soft_iae)._host_tensor(held_out[:8]).is_pinned()


def test_moving_or_reloading_drops_the_graphs(soft_iae, tiny_windows):
    _, held_out = tiny_windows
    cuda = clone(soft_iae, CUDA)
    before = cuda.score(held_out)
    assert cuda._graphs
    cuda.load_state_tensors(soft_iae.state_tensors())
    assert not cuda._graphs
    np.testing.assert_allclose(cuda.score(held_out), before, rtol=1e-5, atol=1e-5)
    assert cuda._graphs
    cuda.to(CUDA)
    assert not cuda._graphs
