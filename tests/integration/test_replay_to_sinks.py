"""`wtbi-monitor replay --to-sinks` on the real broker and database: the daemon's outputs.

Replay goes through the daemon's delivery (delivery.py): the database gets the same score
and alarm points, the alert topic the same events and the dead-letter topic the same
rejected records as the daemon's processing of the same readings gives.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.conftest import Harness
from tests.integration.test_daemon import assert_same_outputs
from wtbi_monitor.cli import main
from wtbi_monitor.config import Settings
from wtbi_monitor.data.wtbi import read_farm, write_turbine
from wtbi_monitor.replay import frames_to_messages

pytestmark = pytest.mark.integration

HOURS = 2.5


def test_replay_to_sinks_writes_what_the_daemon_would(
    harness: Harness, tiny_farm, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "farm"
    for frame in tiny_farm:
        start = int(frame.times_ms[0])
        part = frame.slice_time(start, start + int(HOURS * 3_600_000))
        write_turbine(data, part, failure=[], normal=[])
    channels = Settings().preprocessing.channels
    # What the daemon's processing gives for the file as read back (CSV rounds values).
    messages = frames_to_messages(read_farm(data, channels), channels)
    expected = harness.expected(messages)
    assert expected.alarms, "the stretch should raise alarms at the test threshold"
    assert expected.dead_letters, "and contain readings the validator rejects"
    for key, value in harness.env().items():
        if key.startswith("WTBI_"):
            monkeypatch.setenv(key, value)

    assert main(["replay", "--data", str(data), "--to-sinks"]) == 0

    printed = capsys.readouterr().out
    found = re.search(r"replayed ([\d,]+) readings: ([\d,]+) windows", printed)
    assert found is not None, printed
    assert int(found[1].replace(",", "")) == len(messages)
    assert int(found[2].replace(",", "")) == len(expected.scores)
    # Everything is acknowledged before replay returns: no waiting needed.
    assert_same_outputs(harness, expected)
    dead = harness.topic_messages(f"dlq-{harness.uid}")
    assert sorted(h["reason"].decode() for _, _, h in dead) == sorted(expected.dead_letters)
