"""simulate -> train -> evaluate -> score through the command line, on a tiny farm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wtbi_monitor.cli import main

TINY = """
[model]
preset = "small"
[training]
epochs = 2
pretrain_epochs = 1
warmup_epochs = 1
batch_size = 64
learning_rate = 1e-3
max_train_windows = 600
max_validation_windows = 600
[evaluation]
max_test_windows = 3000
timeline_turbines = 1
[logging]
level = "warning"
"""


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("farm")
    # seed 16, 4 days from 10 December: icing on both turbines in the training half AND in
    # the time-ordered test tail (days 2.6-4)
    code = main(
        [
            "simulate",
            "--out",
            str(out),
            "--turbines",
            "2",
            "--days",
            "4",
            "--start",
            "2015-12-10T00:00:00",
            "--icing-frequency",
            "2",
            "--seed",
            "16",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


def test_train_evaluate_score(farm, config, tmp_path, capsys):
    bundle = tmp_path / "models" / "iae"
    args = ["--config", str(config)]
    assert (
        main(
            [
                *args,
                "train",
                "--data",
                str(farm),
                "--member",
                "iae_lstm_kl:soft",
                "--out",
                str(bundle),
                "--tune",
                "2",
            ]
        )
        == 0
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["member"] == "iae_lstm_kl:soft"
    # the search's chosen values are the ones the bundle was trained with
    chosen = manifest["tuning"]["best"]
    assert len(manifest["tuning"]["trials"]) == 2
    assert manifest["hyperparameters"]["nu"] == chosen["model.nu"]
    assert manifest["hyperparameters"]["lambda_kl"] == chosen["model.lambda_kl"]
    assert manifest["training"]["settings"]["learning_rate"] == chosen["training.learning_rate"]
    assert manifest["preprocessing"]["window_length"] == 26
    # 26 channels plus the derived power residual and pitch asymmetry
    assert manifest["preprocessing"]["derived"]["names"] == ["power_residual", "pitch_asymmetry"]
    assert len(manifest["scaler"]["minimum"]) == 28
    coverage = manifest["training"]["coverage"]
    assert coverage["turbines"] == ["01", "02"]
    assert coverage["temperature_c"]["min"] < coverage["temperature_c"]["max"]
    assert "trained on 2 turbines" in capsys.readouterr().out

    report_dir = tmp_path / "report"
    assert (
        main(
            [
                *args,
                "evaluate",
                "--data",
                str(farm),
                "--members",
                "cae",
                "--bundle",
                str(bundle),
                "--out",
                str(report_dir),
            ]
        )
        == 0
    )
    results = json.loads((report_dir / "results.json").read_text())
    assert set(results["protocols"]) == {"time_ordered", "paper"}
    for protocol in results["protocols"].values():
        for member in protocol["members"]:
            w = member["window"]
            assert 0.0 <= w["auroc"] <= 1.0
            assert 0.0 <= w["auprc"] <= 1.0
    timed = results["protocols"]["time_ordered"]["members"]
    assert [m["member"] for m in timed] == ["cae", "iae_lstm_kl:soft"]
    for m in timed:
        e = m["events"]
        assert 0 <= e["episodes_detected"] <= e["episodes"]
        assert e["false_alarms_per_turbine_day"] >= 0
        if e["alarm_time_icing_fraction"] is not None:
            assert 0.0 <= e["alarm_time_icing_fraction"] <= 1.0
    single = results["protocols"]["time_ordered"]["single_channel"]
    assert all(0.5 <= v["auroc_oracle"] <= 1.0 for v in single.values())
    report = (report_dir / "report.md").read_text()
    assert "Time-ordered protocol" in report
    assert "LEAKY" in report
    assert (report_dir / "roc_time_ordered.png").stat().st_size > 1000
    assert (report_dir / "timeline_cae.png").exists()
    assert "report:" in capsys.readouterr().out

    scores = tmp_path / "scores.csv"
    assert (
        main([*args, "score", "--bundle", str(bundle), "--data", str(farm), "--out", str(scores)])
        == 0
    )
    table = pd.read_csv(scores)
    assert len(table) > 1000
    assert set(table["turbine_id"].astype(str).str.zfill(2)) == {"01", "02"}
    # each turbine's own threshold (per-turbine calibration), one per turbine
    per_turbine = table.groupby("turbine_id")["threshold"]
    assert (per_turbine.min() == per_turbine.max()).all()
    assert np.isfinite(table["threshold"]).all()
    assert (table["above_threshold"] == (table["score"] > table["threshold"])).all()
    assert table["tail_probability"].between(0, 1).all()
    assert {"top_channel_1", "top_channel_2", "top_channel_3"} <= set(table.columns)


def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys):
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "01_data.csv").write_text("time,power\n2015-11-01 00:00:00,1\n")
    assert main(["train", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing column(s)" in err
    assert "Traceback" not in err


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "wtbi_monitor", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("wtbi-monitor ")
