"""Networks: forward passes only (no losses, no optimisers, no fitted state).

The IAE-LSTM-KL network of model-spec section 2 and every ablation of it are one class,
`IAENet`, with switches; the dense autoencoders of seed 004 are `DenseAENet`. Inputs are
scaled windows of shape (B, L, C); the conv networks pad them symmetrically to a multiple
of 2^blocks on each axis (26 -> 32 with three blocks) and compute losses on the unpadded
region only. Nothing here assumes L == C.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wtbi_monitor.errors import ConfigurationError

LEAKY_SLOPE = 0.01
BN_EPS = 1e-4


@dataclass(frozen=True)
class NetworkSpec:
    """Shape and switches of a network; saved in the bundle manifest.

    Attributes:
        window_length: L, rows (time) of a window.
        n_channels: C, columns (channels) of a window.
        conv_channels: output channels of the encoder blocks (paper: 32, 64, 128).
        rep_dim: size of z, the SVDD feature (paper: 128).
        kernel_size: conv kernel (paper: 5).
        use_lstm: the single-step LSTM between encoder and projection.
        input_gate: LSTM input gate (False: i := 1, paper Table VII).
        output_gate: LSTM output gate (False: o := 1).
        use_decoder: the conv decoder (reconstruction branch).
        dense_hidden: hidden widths of the dense autoencoders (encoder side).
    """

    window_length: int
    n_channels: int
    conv_channels: tuple[int, ...] = (32, 64, 128)
    rep_dim: int = 128
    kernel_size: int = 5
    use_lstm: bool = True
    input_gate: bool = True
    output_gate: bool = True
    use_decoder: bool = True
    dense_hidden: tuple[int, ...] = (512, 256)

    @property
    def pool_factor(self) -> int:
        """Total down-sampling of the encoder (2 per block)."""
        return int(2 ** len(self.conv_channels))

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(H, W) after padding each axis up to a multiple of the pool factor."""
        m = self.pool_factor
        return (math.ceil(self.window_length / m) * m, math.ceil(self.n_channels / m) * m)

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zero padding, symmetric (the extra one goes right/bottom)."""
        h, w = self.padded_shape
        ph, pw = h - self.window_length, w - self.n_channels
        return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    @property
    def bottleneck_shape(self) -> tuple[int, int]:
        """Spatial size after the encoder (4 x 4 for 32 x 32 and three blocks)."""
        h, w = self.padded_shape
        return (h // self.pool_factor, w // self.pool_factor)

    @property
    def feature_dim(self) -> int:
        """Flattened encoder output (2048 in the paper configuration)."""
        bh, bw = self.bottleneck_shape
        return self.conv_channels[-1] * bh * bw

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkSpec:
        """Inverse of `to_json`."""
        fields = dict(data)
        for key in ("conv_channels", "dense_hidden"):
            fields[key] = tuple(fields[key])
        return cls(**fields)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's WTBI configuration (model-spec section 2).
    "paper": {"conv_channels": (32, 64, 128), "rep_dim": 128, "dense_hidden": (512, 256)},
    # A small network for tests and the demo: same structure, about 1/16 of the FLOPs.
    "small": {"conv_channels": (8, 16, 32), "rep_dim": 32, "dense_hidden": (128, 64)},
}


def spec_for(
    preset: str,
    window_length: int,
    n_channels: int,
    *,
    use_lstm: bool = True,
    input_gate: bool = True,
    output_gate: bool = True,
    use_decoder: bool = True,
) -> NetworkSpec:
    """Build a `NetworkSpec` from a size preset plus ablation switches."""
    if preset not in PRESETS:
        msg = f"unknown size preset {preset!r}; choose one of {sorted(PRESETS)}"
        raise ConfigurationError(msg)
    base = NetworkSpec(window_length=window_length, n_channels=n_channels, **PRESETS[preset])
    return replace(
        base,
        use_lstm=use_lstm,
        input_gate=input_gate,
        output_gate=output_gate,
        use_decoder=use_decoder,
    )


def _init_conv(module: nn.Module) -> None:
    """Xavier-uniform with the leaky-ReLU gain (model-spec section 2)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.xavier_uniform_(
            module.weight, gain=nn.init.calculate_gain("leaky_relu", LEAKY_SLOPE)
        )


class ConvEncoder(nn.Module):
    """Conv(k, bias=False) -> BatchNorm(affine=False) -> LeakyReLU -> MaxPool(2), per block.

    No bias anywhere: with a bias the network can map every input to the centre (Deep
    SVDD's hypersphere collapse).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c_out in spec.conv_channels:
            layers += [
                nn.Conv2d(c_in, c_out, spec.kernel_size, padding=spec.kernel_size // 2, bias=False),
                nn.BatchNorm2d(c_out, eps=BN_EPS, affine=False),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.apply(_init_conv)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, feature_dim)."""
        out: Tensor = self.blocks(image).flatten(1)
        return out


class SingleStepLSTM(nn.Module):
    """An LSTM cell applied to each window's feature as a sequence of length one.

    With h0 = c0 = 0 (paper eqs. 6-12) the forget gate and the recurrent weights multiply
    zero, so only W_i, W_g, W_o and their biases matter: c = i * g, h = o * tanh(c). They
    are fused into one Linear layer. Every window is processed on its own, so its output
    does not depend on the batch (the authors' nn.LSTM on a 2-D tensor treated the whole
    batch as ONE sequence: see docs/deviations.md). Initialised like nn.LSTM: uniform in
    +-1/sqrt(hidden) for weights and biases.
    """

    def __init__(
        self, dim: int, hidden: int, *, input_gate: bool = True, output_gate: bool = True
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.input_gate = input_gate
        self.output_gate = output_gate
        n_gates = 1 + int(input_gate) + int(output_gate)
        self.gates = nn.Linear(dim, n_gates * hidden)
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.gates.weight, -bound, bound)
        nn.init.uniform_(self.gates.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """(B, dim) -> (B, hidden)."""
        parts = self.gates(x).split(self.hidden, dim=1)
        k = 0
        if self.input_gate:
            i = torch.sigmoid(parts[k])
            k += 1
            cell = i * torch.tanh(parts[k])
        else:
            cell = torch.tanh(parts[k])
        k += 1
        h = torch.tanh(cell)
        if self.output_gate:
            h = torch.sigmoid(parts[k]) * h
        return h


class ConvDecoder(nn.Module):
    """The decoder of model-spec section 2.

    BN1d(z) -> reshape -> LeakyReLU -> [ConvT -> BN -> LeakyReLU -> upsample x2] per block,
    then ConvT(-> 1) -> sigmoid.
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        bh, bw = spec.bottleneck_shape
        area = bh * bw
        # The paper reshapes z (128) to (8, 4, 4). When rep_dim is not a multiple of the
        # bottleneck area (other window or channel counts), a bias-free linear layer
        # expands z to (8, bh, bw) instead (docs/deviations.md).
        self.expand: nn.Linear | None = None
        if spec.rep_dim % area == 0:
            self.start = (spec.rep_dim // area, bh, bw)
        else:
            self.start = (8, bh, bw)
            self.expand = nn.Linear(spec.rep_dim, 8 * area, bias=False)
        self.norm = nn.BatchNorm1d(spec.rep_dim, eps=BN_EPS, affine=False)
        k, p = spec.kernel_size, spec.kernel_size // 2
        layers: list[nn.Module] = []
        c_in = self.start[0]
        for c_out in reversed(spec.conv_channels):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, k, padding=p, bias=False),
                nn.BatchNorm2d(c_out, eps=BN_EPS, affine=False),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.Upsample(scale_factor=2, mode="nearest"),
            ]
            c_in = c_out
        layers.append(nn.ConvTranspose2d(c_in, 1, k, padding=p))
        self.blocks = nn.Sequential(*layers)
        self.apply(_init_conv)

    def forward(self, z: Tensor) -> Tensor:
        """(B, rep_dim) -> (B, 1, H, W) in [0, 1]."""
        h = self.norm(z)
        if self.expand is not None:
            h = self.expand(h)
        x = F.leaky_relu(h.view(-1, *self.start), LEAKY_SLOPE)
        return torch.sigmoid(self.blocks(x))


class IAENet(nn.Module):
    """Encoder -> [single-step LSTM] -> projection z -> [decoder]: IAE-LSTM-KL and ablations.

    Returns z (B, rep_dim) and the reconstruction (B, L, C), or None without a decoder.
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.encoder = ConvEncoder(spec)
        self.lstm: SingleStepLSTM | None = (
            SingleStepLSTM(
                spec.feature_dim,
                spec.feature_dim,
                input_gate=spec.input_gate,
                output_gate=spec.output_gate,
            )
            if spec.use_lstm
            else None
        )
        self.projection = nn.Linear(spec.feature_dim, spec.rep_dim, bias=False)
        self.decoder: ConvDecoder | None = ConvDecoder(spec) if spec.use_decoder else None

    def to_image(self, windows: Tensor) -> Tensor:
        """(B, L, C) -> zero-padded (B, 1, H, W)."""
        return F.pad(windows.unsqueeze(1), self.spec.padding)

    def crop(self, image: Tensor) -> Tensor:
        """(B, 1, H, W) -> (B, L, C): the unpadded region."""
        left, _, top, _ = self.spec.padding
        return image[:, 0, top : top + self.spec.window_length, left : left + self.spec.n_channels]

    def embed(self, windows: Tensor) -> Tensor:
        """(B, L, C) -> z (B, rep_dim)."""
        features = self.encoder(self.to_image(windows))
        if self.lstm is not None:
            features = self.lstm(features)
        z: Tensor = self.projection(features)
        return z

    def decode(self, z: Tensor, decoder: ConvDecoder | None = None) -> Tensor:
        """Z -> reconstruction (B, L, C) with this network's decoder or an auxiliary one."""
        dec = decoder if decoder is not None else self.decoder
        if dec is None:
            msg = "this network has no decoder"
            raise ConfigurationError(msg)
        return self.crop(dec(z))

    def forward(self, windows: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, L, C) -> (z, reconstruction or None)."""
        z = self.embed(windows)
        return z, (self.decode(z) if self.decoder is not None else None)


class DenseAENet(nn.Module):
    """Fully connected autoencoder on the flattened window (seed 004's dense and deep AE)."""

    def __init__(self, spec: NetworkSpec, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.spec = spec
        n_in = spec.window_length * spec.n_channels
        widths = [n_in, *hidden, spec.rep_dim]
        enc: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            enc += [nn.Linear(a, b), nn.LeakyReLU(LEAKY_SLOPE)]
        dec: list[nn.Module] = []
        back = widths[::-1]
        for j, (a, b) in enumerate(itertools.pairwise(back)):
            dec.append(nn.Linear(a, b))
            dec.append(nn.LeakyReLU(LEAKY_SLOPE) if j < len(back) - 2 else nn.Sigmoid())
        self.encoder = nn.Sequential(*enc[:-1])  # z is linear (no activation), like IAENet's
        self.decoder = nn.Sequential(nn.LeakyReLU(LEAKY_SLOPE), *dec)

    def forward(self, windows: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, L, C) -> (z, reconstruction (B, L, C))."""
        z: Tensor = self.encoder(windows.flatten(1))
        recon = self.decoder(z).view_as(windows)
        return z, recon


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def scoring_flops(spec: NetworkSpec, *, with_decoder: bool = False) -> int:
    """Multiply-add FLOPs (2 per MAC) of one window through the network, from layer shapes.

    Counts convolutions, transposed convolutions and linear layers (elementwise work is
    a few percent and is left out, which makes the fraction-of-peak figures conservative).
    """
    h, w = spec.padded_shape
    k2 = spec.kernel_size**2
    macs = 0
    c_in = 1
    for c_out in spec.conv_channels:
        macs += c_in * c_out * k2 * h * w  # 'same' convolution at the block's resolution
        h, w, c_in = h // 2, w // 2, c_out
    feature = spec.feature_dim
    if spec.use_lstm:
        gates = 1 + int(spec.input_gate) + int(spec.output_gate)
        macs += feature * gates * feature
    macs += feature * spec.rep_dim
    if with_decoder and spec.use_decoder:
        bh, bw = spec.bottleneck_shape
        start = spec.rep_dim // (bh * bw) if spec.rep_dim % (bh * bw) == 0 else 8
        if spec.rep_dim % (bh * bw):
            macs += spec.rep_dim * start * bh * bw
        h, w, c_in = bh, bw, start
        for c_out in reversed(spec.conv_channels):
            macs += c_in * c_out * k2 * h * w
            h, w, c_in = h * 2, w * 2, c_out
        macs += c_in * 1 * k2 * h * w
    return 2 * macs
