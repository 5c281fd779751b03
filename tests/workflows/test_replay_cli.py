"""`wtbi-monitor replay --out`: the daemon's processing and delivery onto a JSON-lines file."""

from __future__ import annotations

import json
import re

import orjson
import pytest

from tests.conftest import TINY_SETTINGS
from wtbi_monitor.adapters.files import alarm_record, score_records
from wtbi_monitor.cli import build_processor, main
from wtbi_monitor.config import Settings
from wtbi_monitor.data.wtbi import read_farm, write_turbine
from wtbi_monitor.replay import frames_to_messages, replay_messages

HOURS = 3.0


def _key(record: dict) -> tuple:
    if record["type"] == "score":
        return ("score", record["turbine_id"], record["time_ms"], "")
    return ("alarm", record["turbine_id"], record["event_time_ms"], record["state"])


def _same_records(got: list[dict], want: list[dict]) -> None:
    """Equal records in any order; scores to torch's batch-composition rounding."""
    got, want = sorted(got, key=_key), sorted(want, key=_key)
    assert [_key(r) for r in got] == [_key(r) for r in want]
    for g, w in zip(got, want, strict=True):
        floats = {"score", "peak_score", "tail_probability", "top", "top_channels"}
        assert {k: v for k, v in g.items() if k not in floats} == {
            k: v for k, v in w.items() if k not in floats
        }
        for name in ("score", "peak_score", "tail_probability"):
            if name in w:
                assert g[name] == pytest.approx(w[name], rel=1e-5, abs=1e-9)
        assert [t[0] for t in g.get("top", [])] == [t[0] for t in w.get("top", [])]
        assert [t[1] for t in g.get("top", [])] == pytest.approx(
            [t[1] for t in w.get("top", [])], abs=2e-4
        )
        assert [c["channel"] for c in g.get("top_channels", [])] == [
            c["channel"] for c in w.get("top_channels", [])
        ]


@pytest.mark.parametrize("path", ["messages", "frames"])
def test_replay_to_a_file_gives_the_processors_records(
    tiny_farm, tiny_bundle, tmp_path, monkeypatch, *, capsys, path
):
    """`--messages`: the daemon's micro-batches, records in the same order; the default
    (arrays, turbine after turbine): the same records."""
    data = tmp_path / "farm"
    for frame in tiny_farm:
        start = int(frame.times_ms[0])
        write_turbine(
            data, frame.slice_time(start, start + int(HOURS * 3_600_000)), failure=[], normal=[]
        )
    sections = {**{k: v for k, v in TINY_SETTINGS.items() if k != "training"}}
    sections["service"] = {"bundle": str(tiny_bundle.path), "max_batch_records": 400}
    sections["model"] = {"preset": "small", "threshold_override": 0.0}  # alarms guaranteed
    for section, values in sections.items():
        for key, value in values.items():
            text = json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value)
            monkeypatch.setenv(f"WTBI_{section.upper()}__{key.upper()}", text)
    out = tmp_path / "out" / "replay.jsonl"

    flags = ["--messages"] if path == "messages" else []
    assert main(["replay", "--data", str(data), "--out", str(out), *flags]) == 0

    settings = Settings(**sections)
    channels = settings.preprocessing.channels
    messages = frames_to_messages(read_farm(data, channels), channels)
    want: list[dict] = []
    rejected = 0
    for result in replay_messages(build_processor(settings), messages, batch_records=400):
        want += score_records(result.points)
        want += [alarm_record(e) for e in result.events]
        rejected += len(result.dead_letters)
    got = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    if path == "messages":
        assert got == want  # same records, same order: batch by batch, scores then alarms
    else:
        _same_records(got, want)
    assert {r["type"] for r in got} == {"score", "alarm"}
    assert {r["model"] for r in got if r["type"] == "score"} == {tiny_bundle.name}
    printed = re.search(
        r"replayed ([\d,]+) readings: ([\d,]+) windows .* (\d+) alarm events, (\d+) rejected",
        capsys.readouterr().out,
    )
    assert printed is not None
    assert int(printed[1].replace(",", "")) == len(messages)
    assert int(printed[2].replace(",", "")) == sum(r["type"] == "score" for r in got)
    assert int(printed[3]) == sum(r["type"] == "alarm" for r in got)
    assert int(printed[4]) == rejected
