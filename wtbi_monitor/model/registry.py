"""The model family: names of model-spec section 7 -> detectors with their switches.

A family member is named `family` or `family:objective` (e.g. `iae_lstm_kl:hard`), with
optional gate ablations appended as `+no_input_gate` / `+no_output_gate` (paper Table
VII). `build_detector` turns a name plus the model settings into an unfitted detector;
`detector_from_manifest` rebuilds one from a bundle's saved hyperparameters.

The families themselves (names, switches, loss terms, kinds, where each appears in the
results) are one table in wtbi_monitor/families.py, below the settings in the layers so
that config.py can take `model.family`'s type and the benchmark's default members from
it; this module adds what needs torch: `KINDS`, each detector kind's class and builder.
A family of a new kind needs a row there and an entry in `KINDS` here
(tests/model/test_registry.py checks that every family's kind has one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from wtbi_monitor.config import ModelSettings
from wtbi_monitor.errors import ConfigurationError
from wtbi_monitor.families import FAMILIES, FamilyInfo
from wtbi_monitor.model.baselines import GaussianADDetector, LSADetector, MemAEDetector, VAEDetector
from wtbi_monitor.model.classical import (
    IsolationForestDetector,
    PCADetector,
    PowerCurveRuleDetector,
)
from wtbi_monitor.model.detector import Detector
from wtbi_monitor.model.networks import PRESETS, NetworkSpec, spec_for
from wtbi_monitor.model.neural import ReconstructionDetector, SVDDDetector

__all__ = [
    "FAMILIES",
    "KINDS",
    "BuildRequest",
    "DetectorKind",
    "FamilyInfo",
    "MemberName",
    "build_detector",
    "detector_from_manifest",
    "detector_kind",
    "parse_member",
    "resolve_device",
]


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


@dataclass(frozen=True)
class BuildRequest:
    """What a kind's builder gets: the member, its family's row, the settings, the shape."""

    member: MemberName
    info: FamilyInfo
    settings: ModelSettings
    spec: NetworkSpec
    window_length: int
    n_channels: int


#: Builds an unfitted detector of one kind for a member (see `build_detector`).
Builder = Callable[[BuildRequest], Detector]


def _svdd(r: BuildRequest) -> Detector:
    s = r.settings
    return SVDDDetector(
        r.spec,
        family=r.info.name,
        objective=r.member.objective or "hard",
        lambda_rec=s.lambda_rec,
        lambda_kl=s.lambda_kl if r.info.uses_kl else 0.0,
        nu=s.nu,
        score=s.score,
    )


def _reconstruction(r: BuildRequest) -> Detector:
    hidden: tuple[int, ...] = ()
    if r.info.dense == "deep_ae":
        hidden = tuple(PRESETS[r.settings.preset]["dense_hidden"])
    return ReconstructionDetector(
        r.spec,
        family=r.info.name,
        dense=bool(r.info.dense),
        hidden=hidden,
        beta=r.settings.toll_beta if r.info.toll else 0.0,
    )


@dataclass(frozen=True)
class DetectorKind:
    """A detector class (which rebuilds itself from a manifest) and how members are built."""

    cls: type[Detector]
    build: Builder


#: Every detector kind, by the "kind" written in bundle manifests.
KINDS: dict[str, DetectorKind] = {
    k.cls.kind: k
    for k in (
        DetectorKind(SVDDDetector, _svdd),
        DetectorKind(ReconstructionDetector, _reconstruction),
        DetectorKind(
            VAEDetector,
            lambda r: VAEDetector(r.spec, family=r.info.name, beta=r.settings.vae_beta),
        ),
        DetectorKind(
            MemAEDetector,
            lambda r: MemAEDetector(r.spec, family=r.info.name, items=r.settings.memae_items),
        ),
        DetectorKind(
            LSADetector,
            lambda r: LSADetector(r.spec, family=r.info.name, lambda_llk=r.settings.lsa_lambda),
        ),
        DetectorKind(GaussianADDetector, lambda r: GaussianADDetector(r.spec, family=r.info.name)),
        DetectorKind(
            PCADetector,
            lambda r: PCADetector(
                r.window_length,
                r.n_channels,
                family=r.info.name,
                variance=r.settings.pca_variance,
            ),
        ),
        DetectorKind(
            IsolationForestDetector,
            lambda r: IsolationForestDetector(
                r.window_length, r.n_channels, family=r.info.name, trees=r.settings.iforest_trees
            ),
        ),
        DetectorKind(
            PowerCurveRuleDetector,
            lambda r: PowerCurveRuleDetector(r.window_length, r.n_channels, family=r.info.name),
        ),
    )
}


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
    request = BuildRequest(m, info, settings, spec, window_length, n_channels)
    return KINDS[info.kind].build(request)


def detector_kind(detector: Detector) -> str:
    """The manifest 'kind' of a detector instance."""
    if detector.kind in KINDS:
        return detector.kind
    msg = f"no manifest kind registered for {type(detector).__name__}"
    raise ConfigurationError(msg)


def detector_from_manifest(kind: str, hyper: dict[str, Any]) -> Detector:
    """Rebuild an unfitted detector from a manifest's kind and hyperparameters."""
    if kind not in KINDS:
        msg = f"bundle has an unknown detector kind {kind!r}"
        raise ConfigurationError(msg)
    return KINDS[kind].cls.from_hyperparameters(hyper)


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
