"""An inference-only form of the scoring path, built from a trained network.

Two exact rewrites remove most of the memory-bound work around the convolutions:

* BatchNorm in eval mode is a fixed per-channel affine map, so it folds into the preceding
  convolution's weights plus a bias: y = (W*x - mean) / sqrt(var + eps).
* LeakyReLU is monotonic, so max-pooling before it gives the same result on a quarter of
  the elements: pool(leaky(y)) == leaky(pool(y)).

The result equals the eval-mode network up to float rounding (tested to 1e-5 relative);
scores stay independent of the batch. Measured on the 2-core CPU of this project:
see docs/benchmarks.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wtbi_monitor.model.networks import LEAKY_SLOPE, ConvEncoder, IAENet


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    if bn.running_mean is None or bn.running_var is None:
        msg = "BatchNorm without running statistics cannot be folded"
        raise ValueError(msg)
    scale = torch.rsqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=True,
    ).to(conv.weight.device)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(-bn.running_mean * scale)  # type: ignore[union-attr]
    return fused


class FoldedEncoder(nn.Module):
    """Conv(+folded BN) -> MaxPool -> LeakyReLU per block."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        layers = list(encoder.blocks)
        blocks: list[nn.Module] = []
        for i in range(0, len(layers), 4):
            conv, bn, _act, pool = layers[i : i + 4]
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                msg = "unexpected encoder block layout"
                raise TypeError(msg)
            blocks += [_fold(conv, bn), pool, nn.LeakyReLU(LEAKY_SLOPE)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, feature_dim)."""
        out: Tensor = self.blocks(image).flatten(1)
        return out


class InferenceEmbedder(nn.Module):
    """Windows (B, L, C) -> z (B, rep_dim), equal to `IAENet.embed` in eval mode."""

    def __init__(self, net: IAENet) -> None:
        super().__init__()
        self.padding = net.spec.padding
        self.encoder = FoldedEncoder(net.encoder)
        self.lstm = net.lstm
        self.projection = net.projection

    def features(self, windows: Tensor) -> Tensor:
        """Pad and encode: the encoder features (B, feature_dim), before the LSTM."""
        image = F.pad(windows.unsqueeze(1), self.padding)
        image = image.contiguous(memory_format=torch.channels_last)
        out: Tensor = self.encoder(image)
        return out

    def forward(self, windows: Tensor) -> Tensor:
        """Pad, encode, gate, project."""
        features = self.features(windows)
        if self.lstm is not None:
            features = self.lstm(features)
        z: Tensor = self.projection(features)
        return z


def build_embedder(net: IAENet) -> InferenceEmbedder:
    """The inference form of `net.embed` (net must be trained; it is not modified)."""
    embedder = InferenceEmbedder(net).eval()
    embedder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    for p in embedder.parameters():
        p.requires_grad = False
    return embedder
