"""Line protocol and JSON outputs: schema, escaping, determinism."""

from __future__ import annotations

import numpy as np

from wtbi_monitor.domain import AlarmEvent, AlarmState, Severity
from wtbi_monitor.outputs import alarm_line, score_lines, score_records, tag
from wtbi_monitor.scoring import ScorePoints

CH = ("wind speed", "power")


def points() -> ScorePoints:
    return ScorePoints(
        turbine=["T 1", "T,2"],
        time_ms=np.array([1000, 2000]),
        score=np.array([0.5, 2.25]),
        tail_probability=np.array([0.4, 0.0]),
        clip_fraction=np.array([0.0, 0.01]),
        top_index=np.array([[-1, -1, -1], [1, 0, -1]]),
        top_share=np.array([[0, 0, 0], [0.75, 0.25, 0]]),
        threshold=np.array([1.0, 3.0]),  # each window's turbine's own threshold
    )


def test_score_lines():
    lines = score_lines(points(), "wtbi_score", "m=1", CH)
    assert lines[0] == (
        "wtbi_score,model=m\\=1,turbine=T\\ 1 score=0.5,threshold=1.0,tail_probability=0.4,"
        "clip_fraction=0.0,above=0i 1000"
    )
    assert lines[1].endswith(",above=0i,top1=1i,top1_share=0.75,top2=0i,top2_share=0.25 2000")
    assert ",threshold=3.0," in lines[1]  # 2.25 is below turbine T,2's own threshold
    assert "turbine=T\\,2 " in lines[1]
    assert score_lines(points(), "wtbi_score", "m=1", CH) == lines  # deterministic


def test_alarm_line_has_numeric_fields_and_tags_only():
    event = AlarmEvent(
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
    line = alarm_line(event, "wtbi_alarm", "m")
    head, fields, ts = line.split(" ", 2) if "\\ " not in line else line.rsplit(" ", 2)
    assert ts == "70000"
    assert "state=cleared" in head
    assert "top2=wind\\ speed" in head
    assert "active=0i" in fields
    assert "duration_s=60.0" in fields
    assert "windows_above=12i" in fields
    assert '"' not in fields  # no string fields


def test_tag_escaping():
    assert tag("a b,c=d\\e") == "a\\ b\\,c\\=d\\\\e"


def test_json_records():
    recs = score_records(points(), "m")
    assert recs[1]["top"] == [[1, 0.75], [0, 0.25]]
    assert recs[0]["above"] is False
    assert "top" not in recs[0]
