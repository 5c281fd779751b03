"""The family table (wtbi_monitor/families.py) agrees with the detectors built from it.

Every list of members derived from the table must name members that parse, every family
must be buildable and appear on a model card and in the benchmark, and the table's claims
about a family (its kind, how it attributes channels) must be what its detector does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from wtbi_monitor.config import BenchmarkSettings, ModelSettings
from wtbi_monitor.families import (
    ABLATION_MEMBERS,
    CARD_MEMBERS,
    FAMILIES,
    GATE_ABLATIONS,
    MAIN_MEMBERS,
    PAPER_TABLE_III,
    PAPER_VARIANT,
    family_of,
)
from wtbi_monitor.model.registry import KINDS, build_detector, parse_member

ROOT = Path(__file__).resolve().parents[2]
SMALL = ModelSettings(preset="small")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_builds_a_detector_of_its_kind_and_family(name: str) -> None:
    info = FAMILIES[name]
    assert info.kind in KINDS, (
        f"family {name!r} has kind {info.kind!r}, which model/registry.py's KINDS lacks"
    )
    detector = build_detector(name, SMALL, window_length=26, n_channels=28)
    assert detector.kind == info.kind
    assert detector.family == name
    assert detector.hyperparameters()["family"] == name


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_attribution_in_the_table_is_what_the_detector_does(name: str) -> None:
    detector = build_detector(name, SMALL, window_length=26, n_channels=28)
    if detector.has_decoder:
        actual = "reconstruction"
    elif detector.attributes_channels:
        actual = "gradient"
    else:
        actual = "none"
    assert FAMILIES[name].attribution == actual, (
        f"wtbi_monitor/families.py: set attribution={actual!r} for {name!r}"
    )


def _all_listed() -> list[str]:
    cards = [m for members in CARD_MEMBERS.values() for m in members]
    return sorted({*MAIN_MEMBERS, *ABLATION_MEMBERS, *cards, *PAPER_TABLE_III, *GATE_ABLATIONS})


@pytest.mark.parametrize("member", _all_listed())
def test_every_listed_member_is_a_valid_member(member: str) -> None:
    parsed = parse_member(member.removesuffix(PAPER_VARIANT))
    assert parsed.label == member.removesuffix(PAPER_VARIANT)


def test_every_family_is_in_the_benchmark_and_on_a_model_card() -> None:
    benchmarked = {family_of(m) for m in (*MAIN_MEMBERS, *ABLATION_MEMBERS)}
    carded = {family_of(m) for members in CARD_MEMBERS.values() for m in members}
    assert benchmarked == set(FAMILIES)
    assert carded == set(FAMILIES)
    for info in FAMILIES.values():
        assert set(info.members) <= set(CARD_MEMBERS[info.card_file])
        if info.ablation:
            assert set(info.members) <= set(ABLATION_MEMBERS)
        else:
            assert set(info.members) <= set(MAIN_MEMBERS)


@pytest.mark.parametrize("card", list(CARD_MEMBERS))
def test_every_model_card_exists_with_its_results_markers(card: str) -> None:
    path = ROOT / "docs" / "models" / card
    assert path.is_file(), f"{card} is named in wtbi_monitor/families.py but docs/models/ lacks it"
    text = path.read_text()
    assert "<!-- results:begin -->" in text
    assert "<!-- results:end -->" in text


def test_the_benchmark_defaults_are_the_tables_members() -> None:
    b = BenchmarkSettings()
    assert b.members == MAIN_MEMBERS
    assert b.ablations == ABLATION_MEMBERS
    # the paper's Table III leads the main table, in the paper's order
    assert b.members[: len(PAPER_TABLE_III)] == tuple(PAPER_TABLE_III)


def test_ablations_name_what_they_remove_from_the_full_model() -> None:
    removes = {name: info.removes for name, info in FAMILIES.items() if info.ablation}
    assert removes == {
        "iae_kl": ("LSTM",),
        "iae_lstm": ("KL",),
        "dlsvdd": ("decoder", "KL"),
        "dlsvdd_kl": ("decoder",),
        "dsvdd_kl": ("LSTM", "decoder"),
    }
    assert FAMILIES["iae_lstm_kl"].removes == ()


def test_the_card_table_of_the_models_readme_lists_each_cards_families() -> None:
    """docs/models/README.md's table of cards names the families of each card."""
    text = (ROOT / "docs" / "models" / "README.md").read_text()
    documented: dict[str, set[str]] = {}
    for row in text.splitlines():
        cells = [c.strip() for c in row.split("|")]
        if len(cells) > 3 and cells[1].startswith("[") and cells[1].endswith(".md)"):
            card = cells[1].split("](")[1].removesuffix(")")
            documented[card] = {w for w in cells[2].replace(",", " ").split() if w in FAMILIES}
    expected: dict[str, set[str]] = {}
    for info in FAMILIES.values():
        expected.setdefault(info.card_file, set()).add(info.name)
    assert documented == expected
