"""The settings tree: sources, validation, and the generated reference."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

import pytest
import torch
from pydantic import ValidationError

from wtbi_monitor import cli
from wtbi_monitor.config import ModelSettings, load_settings
from wtbi_monitor.config_docs import render
from wtbi_monitor.errors import ConfigurationError
from wtbi_monitor.families import FAMILIES, FamilyName

ROOT = Path(__file__).resolve().parents[1]


def test_environment_overrides_toml_and_arguments_override_both(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text('[training]\nepochs = 7\nseed = 3\n[model]\npreset = "small"\n')
    monkeypatch.setenv("WTBI_TRAINING__EPOCHS", "9")
    s = load_settings(toml)
    assert s.training.epochs == 9  # environment beats the file
    assert s.training.seed == 3  # the file beats the default
    assert s.model.preset == "small"
    s = load_settings(toml, training={"epochs": 11})
    assert s.training.epochs == 11  # arguments beat both
    assert s.training.seed == 3  # ...and merge with, not replace, the section


def test_unknown_keys_and_bad_values_are_errors(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[training]\nepoch = 7\n")
    with pytest.raises(ValidationError, match="epoch"):
        load_settings(toml)
    toml.write_text("[preprocessing]\nsmoothing_length = 10\n")
    with pytest.raises(ValidationError, match="odd"):
        load_settings(toml)
    toml.write_text("[alarm]\non_fraction = 1.5\n")
    with pytest.raises(ValidationError, match="on_fraction"):
        load_settings(toml)
    with pytest.raises(ConfigurationError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_default_toml_matches_the_code_defaults(monkeypatch, tmp_path):
    from_file = load_settings(ROOT / "configs" / "default.toml").model_dump()
    monkeypatch.chdir(tmp_path)  # no configs/default.toml here: code defaults only
    assert load_settings().model_dump() == from_file


def test_configuration_reference_is_up_to_date():
    assert (ROOT / "docs" / "configuration.md").read_text() == render()


def test_secrets_never_appear_in_dumps_or_reprs(monkeypatch):
    monkeypatch.setenv("WTBI_INFLUX__TOKEN", "tok-very-secret")
    monkeypatch.setenv("WTBI_KAFKA__SASL_PASSWORD", "pw-very-secret")
    s = load_settings()
    assert s.influx.token.get_secret_value() == "tok-very-secret"
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "pw-very-secret"
    for text in (repr(s), str(s.model_dump()), s.model_dump_json()):
        assert "very-secret" not in text


def test_model_family_takes_exactly_the_families_of_the_table():
    """`FamilyName` must be spelled out for mypy: it is checked against the table here."""
    assert get_args(FamilyName) == tuple(FAMILIES), (
        "edit FamilyName in wtbi_monitor/families.py to list the FAMILIES table, in its order"
    )
    assert get_args(ModelSettings.model_fields["family"].annotation) == tuple(FAMILIES)
    with pytest.raises(ValidationError, match="family"):
        ModelSettings(family="no_such_family")  # type: ignore[arg-type]


def test_model_threads_sets_torch_threads_for_the_process(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("WTBI_MODEL__THREADS", "1")
        assert cli._settings(argparse.Namespace(config=None), {}).model.threads == 1
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("WTBI_MODEL__THREADS", "0")  # 0: leave torch's choice alone
        cli._settings(argparse.Namespace(config=None), {})
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
