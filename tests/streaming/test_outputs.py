"""The sinks' formats: line protocol and JSON lines (schema, escaping, determinism)."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from wtbi_monitor.adapters.files import JsonLinesSink, score_records
from wtbi_monitor.adapters.line_protocol import alarm_line, lines_of, score_lines, tag
from wtbi_monitor.domain import AlarmEvent, AlarmState, ScorePoints, Severity


def points(model_version: str = "") -> ScorePoints:
    return ScorePoints(
        turbine=["T 1", "T,2"],
        time_ms=np.array([1000, 2000]),
        score=np.array([0.5, 2.25]),
        tail_probability=np.array([0.4, 0.0]),
        clip_fraction=np.array([0.0, 0.01]),
        top_index=np.array([[-1, -1, -1], [1, 0, -1]]),
        top_share=np.array([[0, 0, 0], [0.75, 0.25, 0]]),
        threshold=np.array([1.0, 3.0]),  # each window's turbine's own threshold
        model="m=1",
        model_version=model_version,
    )


def test_score_lines():
    lines = score_lines(points(), "wtbi_score")
    assert lines[0] == (
        "wtbi_score,model=m\\=1,turbine=T\\ 1 score=0.5,threshold=1.0,tail_probability=0.4,"
        "clip_fraction=0.0,above=0i 1000"
    )
    assert lines[1].endswith(",above=0i,top1=1i,top1_share=0.75,top2=0i,top2_share=0.25 2000")
    assert ",threshold=3.0," in lines[1]  # 2.25 is below turbine T,2's own threshold
    assert "turbine=T\\,2 " in lines[1]
    assert score_lines(points(), "wtbi_score") == lines  # deterministic


def test_score_lines_carry_the_model_version_tag():
    (line, _) = score_lines(points("m=1@0a1b"), "wtbi_score")
    assert line.startswith("wtbi_score,model=m\\=1,model_version=m\\=1@0a1b,turbine=T\\ 1 ")


def event() -> AlarmEvent:
    return AlarmEvent(
        "id-1",
        "T1",
        AlarmState.CLEARED,
        1000,
        61000,
        70000,
        3.5,
        1.0,
        "m",
        "m@abc",
        Severity.HIGH,
        (("power", 0.6), ("wind speed", 0.4)),
        12,
    )


def test_alarm_line_has_numeric_fields_and_tags_only():
    line = alarm_line(event(), "wtbi_alarm")
    head, fields, ts = line.split(" ", 2) if "\\ " not in line else line.rsplit(" ", 2)
    assert ts == "70000"
    assert "state=cleared" in head
    assert "top2=wind\\ speed" in head
    assert "active=0i" in fields
    assert "duration_s=60.0" in fields
    assert "windows_above=12i" in fields
    assert '"' not in fields  # no string fields
    assert "model=m," in head  # the event's own model name
    assert "model_version=m@abc" in head


def test_one_delivery_is_score_lines_then_alarm_lines():
    lines = lines_of(points(), [event()], "s", "a")
    assert lines == [*score_lines(points(), "s"), alarm_line(event(), "a")]


def test_tag_escaping():
    assert tag("a b,c=d\\e") == "a\\ b\\,c\\=d\\\\e"


def test_json_records():
    recs = score_records(points())
    assert recs[0]["model"] == "m=1"
    assert recs[1]["top"] == [[1, 0.75], [0, 0.25]]
    assert recs[0]["above"] is False
    assert "top" not in recs[0]


def test_json_lines_sink_writes_scores_then_alarms(tmp_path):
    path = tmp_path / "out" / "replay.jsonl"
    with JsonLinesSink(path) as sink:
        refused = asyncio.run(sink.write(points(), [event()]))
    assert refused == 0
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [r["type"] for r in rows] == ["score", "score", "alarm"]
    assert rows[2]["alarm_id"] == "id-1"
    assert rows[2]["state"] == "cleared"
