"""The daemon against the real local broker and database."""

from __future__ import annotations

import json
import os
import signal

import orjson
import pytest

from tests.integration.conftest import Harness
from wtbi_monitor.errors import Reason

pytestmark = pytest.mark.integration


def assert_same_outputs(h: Harness, expected, *, alerts_exact: bool = True) -> None:
    """Database points and alert-topic events equal replay's (as sets, by identity)."""
    got = h.db_scores()
    assert got.keys() == expected.scores.keys()
    # float32 inference: the daemon's micro-batches differ from replay's, and BLAS kernels
    # round differently per batch shape (~1e-7 of ||z - c||^2, which the soft boundary's
    # "- R^2" turns into a larger relative error of the score); the database keeps 12
    # significant digits.
    for key, value in expected.scores.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6)
    points = h.db_alarm_points()
    assert set(points) == set(expected.alarms)
    alerts = h.alerts()
    by_id: dict[tuple[str, str], dict] = {}
    for a in alerts:
        key = (a["alarm_id"], a["state"])
        if key in by_id:  # at-least-once: a re-sent event must be identical
            assert by_id[key] == a
        by_id[key] = a
    assert set(by_id) == set(expected.alarms)
    for key, rec in expected.alarms.items():
        mine = by_id[key]
        assert mine["start_ms"] == rec["start_ms"]
        assert mine["end_ms"] == rec["end_ms"]
        assert mine["peak_score"] == pytest.approx(rec["peak_score"], rel=1e-6)
        assert [c["channel"] for c in mine["top_channels"]] == [
            c["channel"] for c in rec["top_channels"]
        ]
    if alerts_exact:
        assert len(alerts) == len(by_id)


def wait_until_consumed(
    h: Harness, messages, timeout: float = 120, running: tuple[str, ...] = ("daemon",)
) -> None:
    """Until the group's committed offsets are every partition's end (daemons alive)."""
    target = h.end_offsets(messages)
    h.wait(lambda: h.committed() == target, timeout, f"committed offsets {target}", running)


def assignments(h: Harness, name: str) -> list[dict]:
    """A daemon's partitions_assigned log lines, in order."""
    return [m for m in h.log_lines(name) if m.get("event") == "partitions_assigned"]


def batches_after(h: Harness, name: str, event: dict) -> list[dict]:
    """A daemon's batch log lines after the given log line."""
    lines = h.log_lines(name)
    return [m for m in lines[lines.index(event) + 1 :] if m.get("event") == "batch"]


def test_end_to_end_matches_replay(harness: Harness, stream_messages):
    expected = harness.expected(stream_messages)
    assert len(expected.alarms) >= 2
    harness.start_daemon()
    harness.produce(stream_messages)
    wait_until_consumed(harness, stream_messages)
    assert_same_outputs(harness, expected)
    messages = [m for m in harness.log_lines() if m.get("event") == "batch"]
    assert messages, "one summary line per batch"
    assert {"records", "windows", "rejected", "inference_ms"} <= set(messages[0])


def _bad_records(good: list[tuple[int, str, bytes]]) -> list[tuple[int, str, bytes]]:
    """One record per rejection reason, for turbine 01, to insert after good[:1000]."""
    t = good[-1][0]
    sample = json.loads(next(m for _, tid, m in good if tid == "01"))
    values = sample["values"]
    first_01 = next(m for _, tid, m in good if tid == "01")
    last_01 = next(m for _, tid, m in reversed(good[:1000]) if tid == "01")

    def doc(**fields: object) -> bytes:
        return orjson.dumps({"turbine_id": "01", "time": t, **fields})

    nan = json.dumps({"turbine_id": "01", "time": t, "values": {**values, "power": float("nan")}})
    return [
        (t, "01", b"{not json"),
        (t, "01", doc(values={"power": 1.0})),  # missing channels
        (t, "01", doc(values={**values, "rotor": 1})),  # unknown channel
        (t, "01", nan.encode()),  # non-finite
        (t, "01", doc(values={**values, "power": "high"})),  # wrong type
        (t, "01", b"{" + b" " * 20000 + b"}"),  # oversized
        (t, "01", doc(time=4102444800000, values=values)),  # the year 2100
        (t, "01", last_01),  # the same time again: duplicate
        (t, "01", first_01),  # an older time: out of order
        (t, "02", first_01),  # turbine 01's message under key 02
    ]


def test_bad_records_are_dead_lettered_and_good_ones_unaffected(harness: Harness, stream_messages):
    good = stream_messages[:2000]
    bad = _bad_records(good)
    mixed = good[:1000] + bad + good[1000:]
    expected = harness.expected(good)
    harness.start_daemon()
    harness.produce(mixed)
    wait_until_consumed(harness, mixed)
    letters = harness.topic_messages(f"dlq-{harness.uid}")
    # the good stream's own sensor faults (-273.15 C) are dead-lettered as in replay
    faults = [v for _, v, h in letters if h["reason"].decode() == Reason.OUT_OF_RANGE]
    assert len(faults) == expected.dead_letters.count(Reason.OUT_OF_RANGE)
    letters = [x for x in letters if x[1] not in set(faults)]
    got = [h["reason"].decode() for _, _, h in letters]
    assert sorted(got) == sorted(
        [
            Reason.MALFORMED_JSON,
            Reason.MISSING_CHANNELS,
            Reason.UNKNOWN_CHANNELS,
            Reason.NON_FINITE,
            Reason.BAD_VALUE_TYPE,
            Reason.TOO_LARGE,
            Reason.FUTURE_TIME,
            Reason.DUPLICATE_TIME,
            Reason.OUT_OF_ORDER,
            Reason.KEY_MISMATCH,
        ]
    )
    for _, _, headers in letters:
        assert headers["detail"]
        assert int(headers["source_offset"]) >= 0
    # each dead letter carries the original bytes, unchanged
    assert {value for _, value, _ in letters} == {message for _, _, message in bad}
    assert_same_outputs(harness, expected)


def test_kill_9_mid_stream_then_restart_gives_identical_outputs(harness: Harness, stream_messages):
    expected = harness.expected(stream_messages)
    half = len(stream_messages) // 2
    turbine_partitions = set(harness.end_offsets(stream_messages))
    first = harness.start_daemon("first")
    # Only the first half exists when the daemon is killed, so the kill always lands
    # mid-stream; it comes once every turbine's partition has a commit, so every turbine
    # has a snapshot (snapshots are saved before the offsets they cover are committed).
    harness.produce(stream_messages[:half])
    harness.wait(
        lambda: set(harness.committed()) == turbine_partitions,
        120,
        "a commit on every turbine's partition",
        ("first",),
    )
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill = harness.committed()
    assert 0 < sum(at_kill.values()) <= half
    harness.produce(stream_messages[half:])
    harness.start_daemon("second")
    wait_until_consumed(harness, stream_messages, running=("second",))
    assert_same_outputs(harness, expected, alerts_exact=False)
    assigned = assignments(harness, "second")
    assert set().union(*(m["partitions"] for m in assigned)) >= turbine_partitions
    for m in assigned:  # each assignment restored every turbine of its partitions
        assert m["restored"] == len(set(m["partitions"]) & turbine_partitions), m


def test_graceful_shutdown_commits_what_was_written(harness: Harness, stream_messages):
    daemon = harness.start_daemon()
    harness.produce(stream_messages)
    target = harness.end_offsets(stream_messages)
    wait_until_consumed(harness, stream_messages)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    stopped = [m for m in harness.log_lines() if m.get("event") == "service_stopped"]
    assert len(stopped) == 1
    assert stopped[0]["clean"] is True
    assert {int(p): o for p, o in stopped[0]["committed"].items()} == target
    # A restart finds nothing old to do: one new record after the restart is the only
    # record it reads (anything uncommitted would be read again before it).
    harness.start_daemon("again")
    marker = (stream_messages[-1][0], "01", b"{not json")
    harness.produce([marker])
    wait_until_consumed(harness, [*stream_messages, marker], running=("again",))
    batches = [m for m in harness.log_lines("again") if m.get("event") == "batch"]
    assert sum(m["records"] for m in batches) == 1
    assert sum(m["rejected"] for m in batches) == 1


def test_two_instances_split_partitions_and_survive_a_rebalance(harness: Harness, stream_messages):
    # With 5 input partitions the two turbines land on partitions 2 and 3, which both the
    # round-robin and the range assignor give to different members of a group of two.
    harness.partitions = 5
    turbine_partitions = set(harness.end_offsets(stream_messages))
    assert turbine_partitions == {2, 3}
    expected = harness.expected(stream_messages)
    half = len(stream_messages) // 2
    harness.start_daemon("a")
    harness.produce(stream_messages[:half])
    # a has a snapshot of every turbine before b joins (a rebalance mid-stream)
    harness.wait(
        lambda: set(harness.committed()) == turbine_partitions,
        120,
        "a commit on every turbine's partition",
        ("a",),
    )
    harness.start_daemon("b")

    def split() -> bool:
        last = [assignments(harness, name)[-1:] for name in ("a", "b")]
        if not all(last):
            return False
        pa, pb = (set(m[0]["partitions"]) for m in last)
        return not pa & pb and pa | pb == set(range(5))

    harness.wait(split, 60, "both instances assigned, partitions split", ("a", "b"))
    harness.produce(stream_messages[half:])
    wait_until_consumed(harness, stream_messages, running=("a", "b"))
    assert_same_outputs(harness, expected, alerts_exact=False)
    final = {name: assignments(harness, name)[-1] for name in ("a", "b")}
    assert not set(final["a"]["partitions"]) & set(final["b"]["partitions"])
    for name, m in final.items():
        mine = set(m["partitions"]) & turbine_partitions
        assert len(mine) == 1, (name, m)  # one turbine each
        assert m["restored"] == 1, (name, m)  # its state came from the snapshot
        # and each processed its turbine's second half after the rebalance
        assert sum(b["records"] for b in batches_after(harness, name, m)) > 0, name
