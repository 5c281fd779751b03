"""Bundles: save -> load gives identical scores; tampered or mismatched bundles are refused."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from wtbi_monitor.config import AlarmSettings, PreprocessingSettings
from wtbi_monitor.errors import BundleError, BundleIntegrityError, BundleMismatchError
from wtbi_monitor.model import Bundle, load_bundle, save_bundle
from wtbi_monitor.model.bundle import build_manifest
from wtbi_monitor.model.manifest import Manifest, ValidationRecord
from wtbi_monitor.preprocessing import MinMaxScaler

ROOT = Path(__file__).resolve().parents[2]


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
    assert manifest["weights_sha256"] == loaded.manifest.weights_sha256
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
    loaded.manifest = loaded.manifest.model_copy(
        update={
            "validation": ValidationRecord(note="changed"),
            "threshold": loaded.manifest.threshold * 2,
        }
    )
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


def _manifest_json(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_a_loaded_manifest_is_saved_back_unchanged(saved, tmp_path):
    again = save_bundle(tmp_path / "again", load_bundle(saved))
    assert _manifest_json(again) == _manifest_json(saved)


def test_an_older_manifest_with_unknown_and_missing_optional_keys_loads(saved, tmp_path):
    doc = _manifest_json(saved)
    for key in ("member", "family", "median_normal_score", "center", "radius", "created_at"):
        doc.pop(key)
    doc["written_by_an_older_version"] = {"anything": [1, 2]}
    doc["training"] = {"old_summary_key": 3}
    doc["preprocessing"]["old_setting"] = True
    (saved / "manifest.json").write_text(json.dumps(doc))
    loaded = load_bundle(saved, expected=PreprocessingSettings())
    assert loaded.manifest.training.train_windows is None
    assert loaded.manifest.training.model_extra == {"old_summary_key": 3}
    # written back with exactly the keys it had: nothing added, nothing lost
    again = save_bundle(tmp_path / "again", loaded)
    assert _manifest_json(again) == doc


def test_a_manifest_without_a_required_key_is_a_bundle_error(saved):
    doc = _manifest_json(saved)
    del doc["kind"]
    (saved / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="not a valid bundle manifest"):
        load_bundle(saved)


def test_another_format_version_is_refused(saved):
    doc = _manifest_json(saved)
    doc["format_version"] = 2
    (saved / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="bundle format 2, expected 1"):
        load_bundle(saved)


def test_every_differing_preprocessing_field_is_named(saved):
    other = PreprocessingSettings(
        smoothing_length=9, window_length=30, nominal_interval_s=10.0, gap_factor=4.0
    )
    with pytest.raises(BundleMismatchError) as info:
        load_bundle(saved, expected=other)
    message = str(info.value)
    for part in (
        "smoothing_length (bundle 11, configured 9)",
        "window_length (bundle 26, configured 30)",
        "nominal_interval_s (bundle 7.0, configured 10.0)",
        "gap_factor (bundle 3.0, configured 4.0)",
    ):
        assert part in message
    assert "channels" not in message


def test_the_documented_manifest_keys_are_the_manifest_fields():
    """docs/models/README.md's table of manifest.json keys names every field, and no other."""
    doc = (ROOT / "docs" / "models" / "README.md").read_text()
    table = doc.split("**`manifest.json`:**", 1)[1].split("\n\n", 2)[1]
    documented = {
        key for row in table.splitlines()[2:] for key in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    assert documented == set(Manifest.model_fields)
