"""The model families of model-spec section 7: one table, and every list of members from it.

A family is named by one row of `FAMILIES`; adding one means adding its row here and its
card in docs/models/ (and, for a new detector kind, the class and its builder in
model/registry.py). Everything else that names families is derived from the table:

* `FamilyName`, the type of `model.family` in config.py. mypy needs a `Literal` spelled
  out, so it is written below by hand and tests/test_config.py checks that it equals the
  table (the test names this file);
* how each member is built and rebuilt from a bundle (model/registry.py builds on the
  rows: switches, loss terms, detector kind);
* the members of the command line's help (`train --member`, `evaluate --members`);
* the benchmark's default members (`MAIN_MEMBERS`, `ABLATION_MEMBERS`: `benchmark.members`
  and `benchmark.ablations` in config.py);
* the model cards and the members each quotes (`CARD_MEMBERS`, evaluation/results_doc.py)
  and the results page's grouping by attribution (`GRADIENT_FAMILIES`);
* the paper's Table III (`PAPER_TABLE_III`, data from the paper, in its order).

Pure data, no torch and no package imports: config.py sits below the model layer
(import-linter) and may import this module, which the model layer then builds on.
tests/model/test_registry.py checks the table against the detectors built from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: The type of `model.family`: must list `FAMILIES` in its order (tests/test_config.py).
FamilyName = Literal[
    "iae_lstm_kl",
    "iae_kl",
    "iae_lstm",
    "dlsvdd",
    "dlsvdd_kl",
    "dsvdd_kl",
    "deep_svdd",
    "iaead",
    "cae",
    "toll",
    "ae",
    "deep_ae",
    "vae",
    "memae",
    "lsa",
    "gaussian_ad",
    "pca",
    "iforest",
    "power_curve_rule",
]
#: The SVDD boundaries, in the order members are listed ("x:soft" before "x:hard").
OBJECTIVES = ("soft", "hard")
#: The benchmark's paper variant of a member ("iae_lstm_kl:soft@paper"): its score, model
#: selection and input clipping as the paper has them (evaluation/benchmark.py).
PAPER_VARIANT = "@paper"
#: The gate ablations of paper Table VII (shown with the other ablations).
GATE_ABLATIONS = (
    "iae_lstm_kl:soft+no_input_gate",
    "iae_lstm_kl:soft+no_output_gate",
    "iae_lstm_kl:soft+no_input_gate+no_output_gate",
)
#: The model card of the IAE-LSTM-KL ablations (paper Tables V and VII).
ABLATIONS_CARD = "ablations.md"


@dataclass(frozen=True)
class FamilyInfo:
    """One family: how to build its members, and where it appears.

    Attributes:
        name: family name.
        kind: the detector class's manifest kind (model/registry.py maps kinds to classes).
        switches: NetworkSpec switches (use_lstm, use_decoder).
        uses_kl: False forces lambda_kl = 0 (the no-KL ablations).
        has_objective: hard/soft boundary applies.
        dense: dense autoencoder ("ae": one hidden layer of rep_dim; "deep_ae": preset widths).
        toll: add the latent-norm term.
        summary: one line for docs and reports.
        card: its model card in docs/models/ (default `<name>.md`; ablations share one).
        ablation: an IAE-LSTM-KL ablation (paper Table V): in `ABLATION_MEMBERS`, not in
            the main tables.
        attribution: how its alarms name channels: "reconstruction" (per-channel error of a
            decoder), "gradient" (gradient x input, no decoder in the score) or "none".
        paper_variant: the benchmark also runs it as the paper has it (`PAPER_VARIANT`).
    """

    name: str
    kind: str
    switches: Mapping[str, bool] = field(default_factory=dict)
    uses_kl: bool = True
    has_objective: bool = True
    dense: str = ""
    toll: bool = False
    summary: str = ""
    card: str = ""
    ablation: bool = False
    attribution: Literal["reconstruction", "gradient", "none"] = "reconstruction"
    paper_variant: bool = False

    @property
    def card_file(self) -> str:
        """The model card's file name in docs/models/."""
        return self.card or f"{self.name}.md"

    @property
    def members(self) -> tuple[str, ...]:
        """Its members without ablation flags: "name:soft", "name:hard", or just "name"."""
        if self.has_objective:
            return tuple(f"{self.name}:{objective}" for objective in OBJECTIVES)
        return (self.name,)

    @property
    def removes(self) -> tuple[str, ...]:
        """What it lacks of the full IAE-LSTM-KL: "LSTM", "decoder", "KL"."""
        lacks = (
            ("LSTM", not self.switches.get("use_lstm", True)),
            ("decoder", not self.switches.get("use_decoder", True)),
            ("KL", not self.uses_kl),
        )
        return tuple(part for part, missing in lacks if missing)


_NO_LSTM = {"use_lstm": False}
_NO_DEC = {"use_decoder": False}

FAMILIES: dict[str, FamilyInfo] = {
    f.name: f
    for f in (
        FamilyInfo(
            "iae_lstm_kl",
            "svdd",
            {},
            summary="encoder + single-step LSTM + SVDD + KL + decoder",
            paper_variant=True,
        ),
        FamilyInfo(
            "iae_kl",
            "svdd",
            _NO_LSTM,
            summary="IAE-LSTM-KL without the LSTM",
            card=ABLATIONS_CARD,
            ablation=True,
        ),
        FamilyInfo(
            "iae_lstm",
            "svdd",
            {},
            uses_kl=False,
            summary="IAE-LSTM-KL without the KL term",
            card=ABLATIONS_CARD,
            ablation=True,
        ),
        FamilyInfo(
            "dlsvdd",
            "svdd",
            _NO_DEC,
            uses_kl=False,
            summary="LSTM + SVDD, no decoder, no KL",
            card=ABLATIONS_CARD,
            ablation=True,
            attribution="gradient",
        ),
        FamilyInfo(
            "dlsvdd_kl",
            "svdd",
            _NO_DEC,
            summary="LSTM + SVDD + KL, no decoder",
            card=ABLATIONS_CARD,
            ablation=True,
            attribution="gradient",
        ),
        FamilyInfo(
            "dsvdd_kl",
            "svdd",
            {**_NO_LSTM, **_NO_DEC},
            summary="SVDD + KL, no LSTM, no decoder",
            card=ABLATIONS_CARD,
            ablation=True,
            attribution="gradient",
        ),
        FamilyInfo(
            "deep_svdd",
            "svdd",
            {**_NO_LSTM, **_NO_DEC},
            uses_kl=False,
            summary="Deep SVDD (Ruff et al. 2018): encoder + projection",
            attribution="gradient",
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
            card="dense_ae.md",
        ),
        FamilyInfo(
            "deep_ae",
            "reconstruction",
            has_objective=False,
            dense="deep_ae",
            summary="deep dense autoencoder (seed 004)",
            card="dense_ae.md",
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
            attribution="gradient",
        ),
        FamilyInfo(
            "pca",
            "pca",
            has_objective=False,
            summary="PCA reconstruction of flattened windows",
            card="classical.md",
        ),
        FamilyInfo(
            "iforest",
            "iforest",
            has_objective=False,
            summary="Isolation Forest on flattened windows (Liu et al. 2008)",
            card="classical.md",
            attribution="none",
        ),
        FamilyInfo(
            "power_curve_rule",
            "power_curve_rule",
            has_objective=False,
            summary="IEA Wind Task 19 power-curve rule on physical channels",
            attribution="none",
        ),
    )
}

#: The paper's Table III (WTBI, AUROC, authors' random-split protocol), model-spec
#: section 8, in the paper's order.
PAPER_TABLE_III: dict[str, float] = {
    "cae": 0.704,
    "memae": 0.690,
    "vae": 0.392,
    "gaussian_ad": 0.595,
    "lsa": 0.685,
    "deep_svdd:hard": 0.798,
    "deep_svdd:soft": 0.823,
    "iaead:hard": 0.823,
    "iaead:soft": 0.894,
    "iae_lstm_kl:hard": 0.893,
    "iae_lstm_kl:soft": 0.963,
}


def family_of(member: str) -> str:
    """The family name of a member ("iae_lstm_kl:soft+no_input_gate@paper" -> "iae_lstm_kl")."""
    return re.split(r"[:+@]", member, maxsplit=1)[0]


def _main_members() -> tuple[str, ...]:
    """Table III in the paper's order, its paper variants, then the other families' members."""
    paper = tuple(PAPER_TABLE_III)
    variants = tuple(m + PAPER_VARIANT for m in paper if FAMILIES[family_of(m)].paper_variant)
    others = tuple(
        m
        for info in FAMILIES.values()
        if not info.ablation
        for m in info.members
        if m not in PAPER_TABLE_III
    )
    return (*paper, *variants, *others)


def _card_members() -> dict[str, tuple[str, ...]]:
    """Each card's members in table order; variants after their family, gates last."""
    cards: dict[str, tuple[str, ...]] = {}
    for info in FAMILIES.values():
        variants = tuple(m + PAPER_VARIANT for m in info.members) if info.paper_variant else ()
        cards[info.card_file] = (*cards.get(info.card_file, ()), *info.members, *variants)
    cards[ABLATIONS_CARD] = (*cards.get(ABLATIONS_CARD, ()), *GATE_ABLATIONS)
    return cards


#: The members of the main tables (`benchmark.members`): paper Table III and more.
MAIN_MEMBERS: tuple[str, ...] = _main_members()
#: The IAE-LSTM-KL ablations (`benchmark.ablations`, paper Tables V and VII): every
#: ablation family's soft members, then the hard ones, then the gate ablations.
ABLATION_MEMBERS: tuple[str, ...] = (
    *(
        f"{info.name}:{objective}"
        for objective in OBJECTIVES
        for info in FAMILIES.values()
        if info.ablation
    ),
    *GATE_ABLATIONS,
)
#: Model cards (docs/models/) and the members whose results are written into them.
CARD_MEMBERS: dict[str, tuple[str, ...]] = _card_members()
#: Families whose channel attribution is by gradient (no decoder in the score).
GRADIENT_FAMILIES: frozenset[str] = frozenset(
    name for name, info in FAMILIES.items() if info.attribution == "gradient"
)
