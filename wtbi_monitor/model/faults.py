"""Generic synthetic faults for label-free model selection and hyperparameter search.

Without icing labels, a configuration or a checkpoint is judged by how well it separates
held-out NORMAL windows from copies of them with generic faults on three random channels
(an offset, a frozen sensor, noise, or a halved value). The faults are deliberately NOT
icing-shaped, so nothing that chooses a model can learn what the test anomaly looks like.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

FAULT_CHANNELS = 3


def synthetic_faults(windows: NDArray[np.float32], seed: int) -> NDArray[np.float32]:
    """A copy of scaled windows (N, L, C) with a generic fault on three random channels each.

    The faulty values stay inside the training range [0, 1].
    """
    rng = np.random.default_rng(seed)
    out = windows.copy()
    n, _, channels = out.shape
    kinds = rng.integers(0, 4, size=(n,))
    for i in range(n):
        cols = rng.permutation(channels)[: min(FAULT_CHANNELS, channels)]
        block = out[i][:, cols]
        if kinds[i] == 0:  # offset
            block += 0.25 if rng.random() < 0.5 else -0.25
        elif kinds[i] == 1:  # frozen sensor
            block[:] = block[0]
        elif kinds[i] == 2:  # noise
            block += rng.normal(0.0, 0.1, size=block.shape).astype(np.float32)
        else:  # halved
            block *= 0.5
        out[i][:, cols] = np.clip(block, 0.0, 1.0)
    return out


def separation_auroc(normal: NDArray[np.float64], faulty: NDArray[np.float64]) -> float:
    """AUROC of faulty (positive) vs normal scores: 1 = every fault scores higher."""
    y = np.r_[np.zeros(normal.size), np.ones(faulty.size)]
    return float(roc_auc_score(y, np.r_[normal, faulty]))
