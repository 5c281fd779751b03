"""Bundles: save -> load gives identical scores; tampered or mismatched bundles are refused."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from safetensors.torch import load_file

from wtbi_monitor.config import AlarmSettings, PreprocessingSettings
from wtbi_monitor.errors import BundleError, BundleIntegrityError, BundleMismatchError
from wtbi_monitor.model import Bundle, load_bundle, save_bundle
from wtbi_monitor.model.bundle import build_manifest
from wtbi_monitor.preprocessing import MinMaxScaler


@pytest.fixture
def saved(soft_iae, tmp_path):
    pre = PreprocessingSettings()
    scaler = MinMaxScaler(np.zeros(26), np.ones(26))
    manifest = build_manifest(
        name="tiny",
        member="iae_lstm_kl:soft",
        detector=soft_iae,
        scaler=scaler,
        preprocessing=pre,
        training={},
        validation={},
    )
    return save_bundle(tmp_path / "tiny", Bundle(None, manifest, soft_iae, scaler))


def test_save_then_load_gives_identical_scores(saved, soft_iae, tiny_windows):
    _, held_out = tiny_windows
    loaded = load_bundle(saved, expected=PreprocessingSettings())
    np.testing.assert_array_equal(loaded.detector.score(held_out), soft_iae.score(held_out))
    assert loaded.threshold == soft_iae.threshold_
    np.testing.assert_array_equal(loaded.detector.calibration_scores_, soft_iae.calibration_scores_)
    assert loaded.version.startswith("tiny@")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["weights_sha256"] == loaded.manifest["weights_sha256"]
    assert len(manifest["center"]) == 32
    assert sorted(p.name for p in saved.iterdir()) == ["manifest.json", "weights.safetensors"]


def test_tampered_weights_are_refused(saved):
    weights = saved / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="does not match"):
        load_bundle(saved)


def test_mismatched_channels_and_preprocessing_are_named(saved):
    channels = PreprocessingSettings().channels
    other = PreprocessingSettings(channels=(*channels[:-1], "rotor_temp"), window_length=30)
    with pytest.raises(BundleMismatchError) as info:
        load_bundle(saved, expected=other)
    message = str(info.value)
    assert "missing ['pitch3_ng5_DC']" in message
    assert "extra ['rotor_temp']" in message
    assert "window_length (bundle 26, configured 30)" in message


def test_reordered_channels_are_refused(saved):
    channels = list(PreprocessingSettings().channels)
    channels[0], channels[1] = channels[1], channels[0]
    with pytest.raises(BundleMismatchError, match="order differs"):
        load_bundle(saved, expected=PreprocessingSettings(channels=tuple(channels)))


def test_a_folder_without_a_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(BundleError, match="is not a model bundle"):
        load_bundle(tmp_path)


def test_version_is_the_name_and_12_hex_digits_of_the_weights_hash(saved, tmp_path):
    loaded = load_bundle(saved)
    version = loaded.version
    digest = hashlib.sha256((saved / "weights.safetensors").read_bytes()).hexdigest()
    assert re.fullmatch(r"tiny@[0-9a-f]{12}", version)
    assert version == f"tiny@{digest[:12]}"
    # alarm ids depend on it: the alarm context carries exactly this version
    assert loaded.alarm_context(AlarmSettings()).model_version == version

    # the same weights saved again, with other manifest contents: the same version
    loaded.manifest["validation"] = {"note": "changed"}
    loaded.manifest["threshold"] = float(loaded.manifest["threshold"]) * 2
    again = load_bundle(save_bundle(tmp_path / "again", loaded))
    assert again.version == version

    # one weight changed: another version, still name@12 hex digits
    tensors = load_file(str(saved / "weights.safetensors"))
    name = next(
        k for k in sorted(tensors) if k.startswith("model.") and tensors[k].is_floating_point()
    )
    tensors[name] = tensors[name] + 1e-3
    loaded.detector.load_state_tensors(tensors)
    changed = load_bundle(save_bundle(tmp_path / "changed", loaded))
    assert re.fullmatch(r"tiny@[0-9a-f]{12}", changed.version)
    assert changed.version != version


def test_an_unsaved_bundle_has_no_hash_in_its_version(soft_iae):
    scaler = MinMaxScaler(np.zeros(26), np.ones(26))
    manifest = build_manifest(
        name="tiny",
        member="iae_lstm_kl:soft",
        detector=soft_iae,
        scaler=scaler,
        preprocessing=PreprocessingSettings(),
        training={},
        validation={},
    )
    assert Bundle(None, manifest, soft_iae, scaler).version == "tiny@unsaved"
