"""The model family: names of model-spec section 7 -> detectors with their switches.

A family member is named `family` or `family:objective` (e.g. `iae_lstm_kl:hard`), with
optional gate ablations appended as `+no_input_gate` / `+no_output_gate` (paper Table
VII). `build_detector` turns a name plus the model settings into an unfitted detector;
`detector_from_manifest` rebuilds one from a bundle's saved hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from wtbi_monitor.config import ModelSettings
from wtbi_monitor.errors import ConfigurationError
from wtbi_monitor.model.baselines import GaussianADDetector, LSADetector, MemAEDetector, VAEDetector
from wtbi_monitor.model.classical import (
    IsolationForestDetector,
    PCADetector,
    PowerCurveRuleDetector,
)
from wtbi_monitor.model.detector import Detector
from wtbi_monitor.model.networks import PRESETS, NetworkSpec, spec_for
from wtbi_monitor.model.neural import ReconstructionDetector, SVDDDetector


@dataclass(frozen=True)
class FamilyInfo:
    """How to build one family member.

    Attributes:
        name: family name.
        kind: the detector class's manifest kind (see `_FROM_HYPER`).
        switches: NetworkSpec switches (use_lstm, use_decoder).
        uses_kl: False forces lambda_kl = 0 (the no-KL ablations).
        has_objective: hard/soft boundary applies.
        dense: dense autoencoder ("ae": one hidden layer of rep_dim; "deep_ae": preset widths).
        toll: add the latent-norm term.
        summary: one line for docs and reports.
    """

    name: str
    kind: str
    switches: dict[str, bool] = field(default_factory=dict)
    uses_kl: bool = True
    has_objective: bool = True
    dense: str = ""
    toll: bool = False
    summary: str = ""


_NO_LSTM = {"use_lstm": False}
_NO_DEC = {"use_decoder": False}

FAMILIES: dict[str, FamilyInfo] = {
    f.name: f
    for f in (
        FamilyInfo(
            "iae_lstm_kl", "svdd", {}, summary="encoder + single-step LSTM + SVDD + KL + decoder"
        ),
        FamilyInfo("iae_kl", "svdd", _NO_LSTM, summary="IAE-LSTM-KL without the LSTM"),
        FamilyInfo(
            "iae_lstm", "svdd", {}, uses_kl=False, summary="IAE-LSTM-KL without the KL term"
        ),
        FamilyInfo(
            "dlsvdd", "svdd", _NO_DEC, uses_kl=False, summary="LSTM + SVDD, no decoder, no KL"
        ),
        FamilyInfo("dlsvdd_kl", "svdd", _NO_DEC, summary="LSTM + SVDD + KL, no decoder"),
        FamilyInfo(
            "dsvdd_kl", "svdd", {**_NO_LSTM, **_NO_DEC}, summary="SVDD + KL, no LSTM, no decoder"
        ),
        FamilyInfo(
            "deep_svdd",
            "svdd",
            {**_NO_LSTM, **_NO_DEC},
            uses_kl=False,
            summary="Deep SVDD (Ruff et al. 2018): encoder + projection",
        ),
        FamilyInfo(
            "iaead",
            "svdd",
            _NO_LSTM,
            uses_kl=False,
            summary="IAEAD (Cheng et al. 2021): CAE + SVDD, no LSTM, no KL",
        ),
        FamilyInfo(
            "cae",
            "reconstruction",
            has_objective=False,
            summary="convolutional autoencoder, same encoder/decoder",
        ),
        FamilyInfo(
            "toll",
            "reconstruction",
            has_objective=False,
            toll=True,
            summary="Toll: AE + beta*||z||^2 in loss and score (seed 003)",
        ),
        FamilyInfo(
            "ae",
            "reconstruction",
            has_objective=False,
            dense="ae",
            summary="dense autoencoder, one hidden layer (seed 004)",
        ),
        FamilyInfo(
            "deep_ae",
            "reconstruction",
            has_objective=False,
            dense="deep_ae",
            summary="deep dense autoencoder (seed 004)",
        ),
        FamilyInfo(
            "vae", "vae", has_objective=False, summary="variational AE (Kingma & Welling 2014)"
        ),
        FamilyInfo(
            "memae", "memae", has_objective=False, summary="memory-augmented AE (Gong et al. 2019)"
        ),
        FamilyInfo(
            "lsa",
            "lsa",
            has_objective=False,
            summary="latent space autoregression (Abati et al. 2019)",
        ),
        FamilyInfo(
            "gaussian_ad",
            "gaussian_ad",
            has_objective=False,
            summary="Gaussian fit of CAE encoder features (Rippel et al. 2020, adapted)",
        ),
        FamilyInfo(
            "pca", "pca", has_objective=False, summary="PCA reconstruction of flattened windows"
        ),
        FamilyInfo(
            "iforest",
            "iforest",
            has_objective=False,
            summary="Isolation Forest on flattened windows (Liu et al. 2008)",
        ),
        FamilyInfo(
            "power_curve_rule",
            "power_curve_rule",
            has_objective=False,
            summary="IEA Wind Task 19 power-curve rule on physical channels",
        ),
    )
}

#: Detector classes by the "kind" written in bundle manifests.
DetectorFactory = Callable[[dict[str, Any]], Detector]
_CLASSES: tuple[type[Detector], ...] = (
    SVDDDetector,
    ReconstructionDetector,
    VAEDetector,
    MemAEDetector,
    LSADetector,
    GaussianADDetector,
    PCADetector,
    IsolationForestDetector,
    PowerCurveRuleDetector,
)
_FROM_HYPER: dict[str, DetectorFactory] = {c.kind: c.from_hyperparameters for c in _CLASSES}


@dataclass(frozen=True)
class MemberName:
    """A parsed family-member name."""

    family: str
    objective: str | None
    input_gate: bool = True
    output_gate: bool = True

    @property
    def label(self) -> str:
        """Canonical display name, e.g. 'iae_lstm_kl:hard+no_input_gate'."""
        out = self.family + (f":{self.objective}" if self.objective else "")
        if not self.input_gate:
            out += "+no_input_gate"
        if not self.output_gate:
            out += "+no_output_gate"
        return out


def parse_member(name: str, default_objective: str = "soft") -> MemberName:
    """Parse 'family[:objective][+no_input_gate][+no_output_gate]'."""
    head, *flags = name.split("+")
    family, _, objective = head.partition(":")
    if family not in FAMILIES:
        msg = f"unknown model family {family!r}; known: {', '.join(sorted(FAMILIES))}"
        raise ConfigurationError(msg)
    info = FAMILIES[family]
    if objective and objective not in ("hard", "soft"):
        msg = f"objective must be 'hard' or 'soft' in {name!r}"
        raise ConfigurationError(msg)
    unknown = set(flags) - {"no_input_gate", "no_output_gate"}
    if unknown:
        msg = f"unknown ablation flag(s) {sorted(unknown)} in {name!r}"
        raise ConfigurationError(msg)
    if flags and not info.switches.get("use_lstm", True):
        msg = f"gate ablations need an LSTM, and {family!r} has none"
        raise ConfigurationError(msg)
    return MemberName(
        family=family,
        objective=(objective or default_objective) if info.has_objective else None,
        input_gate="no_input_gate" not in flags,
        output_gate="no_output_gate" not in flags,
    )


def build_detector(
    member: MemberName | str,
    settings: ModelSettings,
    *,
    window_length: int,
    n_channels: int,
) -> Detector:
    """An unfitted detector for `member`, sized by `settings.preset`."""
    m = parse_member(member, settings.objective) if isinstance(member, str) else member
    info = FAMILIES[m.family]
    switches = {**info.switches, "input_gate": m.input_gate, "output_gate": m.output_gate}
    spec = spec_for(settings.preset, window_length, n_channels, **switches)
    shape = (window_length, n_channels)
    simple: dict[str, Callable[[], Detector]] = {
        "vae": lambda: VAEDetector(spec, beta=settings.vae_beta),
        "memae": lambda: MemAEDetector(spec, items=settings.memae_items),
        "lsa": lambda: LSADetector(spec, lambda_llk=settings.lsa_lambda),
        "gaussian_ad": lambda: GaussianADDetector(spec),
        "pca": lambda: PCADetector(*shape, variance=settings.pca_variance),
        "iforest": lambda: IsolationForestDetector(*shape, trees=settings.iforest_trees),
        "power_curve_rule": lambda: PowerCurveRuleDetector(*shape),
    }
    if info.kind in simple:
        return simple[info.kind]()
    if info.kind == "svdd":
        return SVDDDetector(
            spec,
            family=m.family,
            objective=m.objective or "hard",
            lambda_rec=settings.lambda_rec,
            lambda_kl=settings.lambda_kl if info.uses_kl else 0.0,
            nu=settings.nu,
            score=settings.score,
        )
    hidden: tuple[int, ...] = ()
    if info.dense == "deep_ae":
        hidden = tuple(PRESETS[settings.preset]["dense_hidden"])
    return ReconstructionDetector(
        spec,
        family=m.family,
        dense=bool(info.dense),
        hidden=hidden,
        beta=settings.toll_beta if info.toll else 0.0,
    )


def detector_kind(detector: Detector) -> str:
    """The manifest 'kind' of a detector instance."""
    if detector.kind in _FROM_HYPER:
        return detector.kind
    msg = f"no manifest kind registered for {type(detector).__name__}"
    raise ConfigurationError(msg)


def detector_from_manifest(kind: str, hyper: dict[str, Any]) -> Detector:
    """Rebuild an unfitted detector from a manifest's kind and hyperparameters."""
    if kind not in _FROM_HYPER:
        msg = f"bundle has an unknown detector kind {kind!r}"
        raise ConfigurationError(msg)
    return _FROM_HYPER[kind](hyper)


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            msg = "model.device is 'cuda' but no CUDA device is available"
            raise ConfigurationError(msg)
        return torch.device("cuda")
    return torch.device("cpu")


def network_spec_of(detector: Detector) -> NetworkSpec | None:
    """The detector's network spec, if it has one."""
    spec = getattr(detector, "spec", None)
    return spec if isinstance(spec, NetworkSpec) else None
