"""The streaming processor: batch-size independence, recovery from snapshots, bad records."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_SETTINGS
from wtbi_monitor.alarms import TurbineAlarm
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings
from wtbi_monitor.domain import InputRecord
from wtbi_monitor.errors import Reason
from wtbi_monitor.preprocessing.stream import encode_array
from wtbi_monitor.replay import frames_to_messages, merge_offsets, replay_frames, replay_messages
from wtbi_monitor.scoring import BatchResult, StreamProcessor

SETTINGS = Settings(**TINY_SETTINGS)


MESSAGES: list[list[tuple[int, str, bytes]]] = []


@pytest.fixture(scope="module")
def messages(tiny_farm):
    """About 3 hours of both turbines of the tiny farm."""
    msgs = frames_to_messages(tiny_farm, SETTINGS.preprocessing.channels)
    MESSAGES[:] = [msgs[: 3 * 3600 // 7 * 2]]
    return MESSAGES[0]


def decoder(bundle, clock=None) -> RecordDecoder:
    if clock is not None:  # "now" inside the data: later readings are in the future
        return RecordDecoder(
            bundle.source_channels,
            max_future_s=60,
            valid_ranges=SETTINGS.preprocessing.valid_ranges,
            clock=clock,
        )
    return RecordDecoder(
        bundle.source_channels, max_future_s=1e12, valid_ranges=SETTINGS.preprocessing.valid_ranges
    )


_STREAM_SCORES: dict[str, np.ndarray] = {}


def stream_scores(bundle, messages) -> np.ndarray:
    """Scores of the test messages' windows (computed once per bundle)."""
    if bundle.version not in _STREAM_SCORES:
        proc = StreamProcessor(bundle, SETTINGS.preprocessing, SETTINGS.alarm, decoder(bundle))
        results = replay_messages(proc, messages, batch_records=2000)
        _STREAM_SCORES[bundle.version] = np.concatenate([r.points.score for r in results])
    return _STREAM_SCORES[bundle.version]


def processor(bundle, quantile: float = 0.8, messages=None, clock=None) -> StreamProcessor:
    # A threshold at a quantile of the test stream's own scores: alarms are certain, so the
    # comparisons below always cover raised AND cleared alarm events, whatever the tiny
    # model learned.
    low = float(np.quantile(stream_scores(bundle, messages or MESSAGES[0]), quantile))
    return StreamProcessor(
        dataclasses.replace(bundle, threshold_override=low),
        SETTINGS.preprocessing,
        SETTINGS.alarm,
        decoder(bundle, clock),
        256,
    )


def collect(results: list[BatchResult]) -> tuple[dict, list]:
    points = {}
    events = []
    for r in results:
        for i, tid in enumerate(r.points.turbine):
            points[(tid, int(r.points.time_ms[i]))] = (
                float(r.points.score[i]),
                tuple(r.points.top_index[i].tolist()),
            )
        events += [
            (e.alarm_id, e.state.value, e.start_ms, e.end_ms, e.peak_score, e.top_channels)
            for e in r.events
        ]
    # Turbines are independent: a batch emits turbine 01's events before 02's, so their
    # interleaving depends on the batching. Each alarm's raise comes before its clear.
    events.sort(key=lambda e: (e[2], e[0], e[1] == "cleared"))
    return points, events


def assert_same_outputs(got: tuple[dict, list], want: tuple[dict, list]) -> None:
    """The same windows with the same scores and top channels, and the same alarm events.

    Scores are compared with a tight tolerance: torch may change the last float bits when
    the composition of a scoring batch changes, nothing else may change them.
    """
    (got_points, got_events), (want_points, want_events) = got, want
    assert got_points.keys() == want_points.keys()
    keys = sorted(want_points)
    np.testing.assert_allclose(
        [got_points[k][0] for k in keys], [want_points[k][0] for k in keys], rtol=1e-5, atol=1e-9
    )
    assert [got_points[k][1] for k in keys] == [want_points[k][1] for k in keys]
    assert [e[:4] for e in got_events] == [e[:4] for e in want_events]
    np.testing.assert_allclose(
        [e[4] for e in got_events], [e[4] for e in want_events], rtol=1e-5, atol=1e-9
    )
    assert [[n for n, _ in e[5]] for e in got_events] == [[n for n, _ in e[5]] for e in want_events]
    np.testing.assert_allclose(
        [s for e in got_events for _, s in e[5]],
        [s for e in want_events for _, s in e[5]],
        atol=2e-4,  # shares are rounded to 4 decimals
    )


def records(msgs, start: int = 0) -> list[InputRecord]:
    return [InputRecord(0, start + i, t.encode(), m) for i, (_, t, m) in enumerate(msgs)]


def test_outputs_do_not_depend_on_batch_size(tiny_bundle, messages):
    a = collect(list(replay_messages(processor(tiny_bundle), messages, batch_records=2000)))
    b = collect(list(replay_messages(processor(tiny_bundle), messages, batch_records=37)))
    assert len(a[0]) > 1000
    assert {"raised", "cleared"} <= {e[1] for e in a[1]}, "the comparison must cover alarms"
    assert_same_outputs(b, a)


def first_hours(farm, hours: float) -> list:
    return [f.slice_time(None, int(f.times_ms[0]) + int(hours * 3_600_000)) for f in farm]


def dead_letters(results: list[BatchResult]) -> list[tuple]:
    rows = [
        (d.record.offset, d.record.key, d.record.value, d.reason, d.detail)
        for r in results
        for d in r.dead_letters
    ]
    return sorted(rows, key=lambda row: row[0])


@pytest.mark.parametrize("future", [False, True])
def test_the_fast_replay_gives_the_message_paths_outputs(tiny_bundle, tiny_farm, future):
    """Arrays straight into the processor, in chunks: the same windows, scores, alarms and
    dead letters (offsets, payloads, reasons, details) as messages in micro-batches."""
    frames = first_hours(tiny_farm, 3.0)
    messages = frames_to_messages(frames, SETTINGS.preprocessing.channels)
    # "now" two hours in: the decoder rejects the last hour as future readings
    now_s = (int(frames[0].times_ms[0]) + 2 * 3_600_000) / 1000 if future else None
    clock = None if now_s is None else (lambda: now_s)
    slow = list(
        replay_messages(
            processor(tiny_bundle, messages=messages, clock=clock), messages, batch_records=500
        )
    )
    fast = list(
        replay_frames(processor(tiny_bundle, messages=messages, clock=clock), frames, chunk=700)
    )
    assert len(fast) > len(frames), "several chunks per turbine"
    want_outputs = collect(slow)
    assert {"raised", "cleared"} <= {e[1] for e in want_outputs[1]}, "must cover alarms"
    assert_same_outputs(collect(fast), want_outputs)
    want = dead_letters(slow)
    reasons = {row[3] for row in want}
    assert Reason.OUT_OF_RANGE in reasons, "the data must hold sensor faults"
    assert (Reason.FUTURE_TIME in reasons) == future
    assert dead_letters(fast) == want
    for field_name in ("records", "readings", "skipped"):
        assert sum(getattr(r, field_name) for r in fast) == sum(
            getattr(r, field_name) for r in slow
        )


@pytest.mark.parametrize("case", ["non_ascii_id", "too_long_id", "small_max_bytes"])
def test_the_fast_replay_judges_ids_and_sizes_like_the_decoder(tiny_bundle, tiny_farm, case):
    frames = first_hours(tiny_farm, 0.5)
    if case == "non_ascii_id":  # valid, and escaped differently in JSON than ASCII
        frames = [dataclasses.replace(frames[0], turbine_id='Tür ö"1'), frames[1]]
    elif case == "too_long_id":
        frames = [dataclasses.replace(frames[0], turbine_id="T" * 65), frames[1]]
    messages = frames_to_messages(frames, SETTINGS.preprocessing.channels)
    procs = [processor(tiny_bundle, messages=messages) for _ in range(2)]
    if case == "small_max_bytes":  # turbine 01's messages fit, 02's do not
        limit = max(len(m) for _, t, m in messages if t == "01")
        for proc in procs:
            proc.decoder.max_bytes = limit
        frames = [frames[0], dataclasses.replace(frames[1], turbine_id="02" + "x" * 40)]
        messages = frames_to_messages(frames, SETTINGS.preprocessing.channels)
    fast = list(replay_frames(procs[0], frames, chunk=300))
    slow = list(replay_messages(procs[1], messages, batch_records=300))
    want = dead_letters(slow)
    if case != "non_ascii_id":
        expected = Reason.TOO_LARGE if case == "small_max_bytes" else Reason.BAD_TURBINE_ID
        assert expected in {row[3] for row in want}
    assert dead_letters(fast) == want
    assert_same_outputs(collect(fast), collect(slow))


def test_merge_offsets_are_the_message_order(tiny_farm):
    frames = first_hours(tiny_farm, 1.0)
    messages = frames_to_messages(frames, SETTINGS.preprocessing.channels)
    for frame, offsets in zip(frames, merge_offsets(frames), strict=True):
        got = [messages[k][:2] for k in offsets.tolist()]
        assert got == [(int(t), frame.turbine_id) for t in frame.times_ms]


def test_the_fast_replay_refuses_a_processor_that_tracks_the_turbines(tiny_bundle, tiny_farm):
    frames = first_hours(tiny_farm, 1.0)
    messages = frames_to_messages(frames, SETTINGS.preprocessing.channels)
    proc = processor(tiny_bundle, messages=messages)
    list(replay_frames(proc, frames))
    with pytest.raises(ValueError, match="without its state"):
        list(replay_frames(proc, frames))


def test_the_fast_replay_of_a_farm_over_the_turbine_cap_uses_the_message_path(
    tiny_bundle, tiny_farm
):
    frames = first_hours(tiny_farm, 1.0)
    messages = frames_to_messages(frames, SETTINGS.preprocessing.channels)
    capped = [processor(tiny_bundle, messages=messages) for _ in range(2)]
    for proc in capped:
        proc.max_turbines = 1
    fast = list(replay_frames(capped[0], frames, chunk=500))
    slow = list(replay_messages(capped[1], messages, batch_records=500))
    assert Reason.TOO_MANY_TURBINES in {row[3] for row in dead_letters(slow)}
    assert dead_letters(fast) == dead_letters(slow)
    assert_same_outputs(collect(fast), collect(slow))


@pytest.mark.parametrize("cut_fraction", [0.13, 0.5, 0.77])
def test_restore_from_snapshot_continues_exactly(tiny_bundle, messages, cut_fraction):
    recs = records(messages)
    cut = int(len(recs) * cut_fraction)
    uninterrupted = processor(tiny_bundle)
    whole = collect([uninterrupted.process(recs[i : i + 500]) for i in range(0, len(recs), 500)])
    first = processor(tiny_bundle)
    part1 = [first.process(recs[i : min(i + 500, cut)]) for i in range(0, cut, 500)]
    snaps = [first.snapshot(t) for t in first.turbines]
    second = processor(tiny_bundle)
    for s in snaps:
        second.restore(s)
    part2 = [second.process(recs[i : i + 500]) for i in range(cut, len(recs), 500)]
    resumed = collect(part1 + part2)
    # the resumed part has windows and alarm events, so the restored state matters
    assert sum(len(r.points) for r in part2) > 100
    assert any(r.events for r in part2)
    assert_same_outputs(resumed, whole)


def test_snapshot_newer_than_the_commit_skips_what_it_contains(tiny_bundle, messages):
    recs = records(messages)
    commit, crash = len(recs) // 3, len(recs) // 2
    first = processor(tiny_bundle)
    before = [first.process(recs[:commit]), first.process(recs[commit:crash])]
    snaps = [first.snapshot(t) for t in first.turbines]  # snapshot taken after the commit point
    second = processor(tiny_bundle)
    for s in snaps:
        second.restore(s)
    replayed = second.process(recs[commit:])  # restart from the older committed offset
    assert replayed.skipped == crash - commit
    after = collect([*before, replayed])
    whole = collect([processor(tiny_bundle).process(recs)])
    assert {"raised", "cleared"} <= {e[1] for e in whole[1]}
    assert_same_outputs(after, whole)


def _other_version(bundle):
    """The same model under another version (as if retrained): other alarm ids."""
    manifest = bundle.manifest.model_copy(update={"weights_sha256": "f" * 64})
    return dataclasses.replace(bundle, manifest=manifest)


def test_a_snapshot_of_another_model_version_restores_the_stream_but_not_the_alarms(
    tiny_bundle, messages
):
    """docs/recovery.md: alarm ids depend on the model version, so alarm state is dropped."""
    recs = records(messages)
    first = processor(tiny_bundle)
    raised = None
    for i in range(0, len(recs), 250):
        first.process(recs[i : i + 250])
        raised = next((t for t, s in first.turbines.items() if s.alarm.active_alarm_id), None)
        if raised is not None:
            break
    assert raised is not None, "the test needs a snapshot taken during an alarm"
    snap = first.snapshot(raised)
    want = first.turbines[raised]

    same = processor(tiny_bundle)
    assert same.restore(snap) == raised
    assert same.turbines[raised].alarm.snapshot() == want.alarm.snapshot()
    assert same.turbines[raised].alarm.active_alarm_id == want.alarm.active_alarm_id

    other_bundle = _other_version(first.bundle)
    other = StreamProcessor(
        other_bundle, SETTINGS.preprocessing, SETTINGS.alarm, decoder(tiny_bundle), 256
    )
    assert other.context.model_version != first.context.model_version
    other.process(recs[:250])  # it already tracks the turbine: the restore replaces that
    assert raised in other.turbines
    assert other.restore(snap) == raised
    restored = other.turbines[raised]
    fresh = TurbineAlarm(raised, SETTINGS.alarm, other.context)
    assert restored.alarm.snapshot() == fresh.snapshot()
    assert restored.alarm.active_alarm_id is None
    # the stream state and the offset are restored all the same
    assert restored.stream.snapshot() == want.stream.snapshot()
    assert (restored.offset, restored.partition) == (want.offset, want.partition)


def test_a_failed_restore_leaves_no_half_restored_turbine(tiny_bundle, messages):
    recs = records(messages[:400])
    proc = processor(tiny_bundle)
    proc.process(recs)
    tid = next(iter(proc.turbines))
    doc = orjson.loads(proc.snapshot(tid))
    doc["stream"]["raw"] = encode_array(np.zeros(100 * proc.n_inputs))  # too many raw rows
    with pytest.raises(ValueError, match="does not fit"):
        proc.restore(orjson.dumps(doc))
    assert tid not in proc.turbines  # neither the old state nor half of the new one
    # its records are then read again from scratch, none skipped
    again = proc.process(recs)
    assert again.skipped == sum(r.key != tid.encode() for r in recs) > 0
    assert tid in proc.turbines


def test_an_unknown_snapshot_version_is_refused(tiny_bundle, messages):
    proc = processor(tiny_bundle)
    proc.process(records(messages[:200]))
    doc = orjson.loads(proc.snapshot(next(iter(proc.turbines))))
    doc["v"] = doc["v"] + 1
    with pytest.raises(ValueError, match="unknown snapshot version"):
        processor(tiny_bundle).restore(orjson.dumps(doc))


@pytest.fixture(scope="module")
def good_records(messages) -> list[InputRecord]:
    """The first 1200 messages (both turbines, 70 minutes), offsets 0..1199."""
    return records(messages[:1200])


@pytest.fixture(scope="module")
def clean_result(tiny_bundle, good_records) -> BatchResult:
    return processor(tiny_bundle).process(good_records)


def _faults(clean: BatchResult) -> set[int]:
    """Offsets the clean run dead-letters: the tiny farm's own sensor faults (-273.15 C)."""
    assert {d.reason for d in clean.dead_letters} <= {Reason.OUT_OF_RANGE}
    return {d.record.offset for d in clean.dead_letters}


def _good_at(recs: list[InputRecord], faults: set[int], at: int) -> int:
    """The first index from `at` on of a record the clean run accepts."""
    return next(i for i in range(at, len(recs)) if recs[i].offset not in faults)


def _bad_record(kind: str, recs: list[InputRecord], last: int, old: int) -> InputRecord:
    """A bad record with a new offset, to be sent right after `recs[last]`."""
    if kind == "malformed":
        return InputRecord(0, 10_000, b"T1", b"{oops")
    if kind == "missing_channels":
        value = orjson.dumps({"turbine_id": "01", "time": 1, "values": {}})
        return InputRecord(0, 10_000, b"01", value)
    if kind == "duplicate":  # the same reading again: its time equals the turbine's last
        return InputRecord(0, 10_000, recs[last].key, recs[last].value)
    assert kind == "out_of_order"  # an older reading of a turbine that has moved on
    return InputRecord(0, 10_000, recs[old].key, recs[old].value)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("malformed", Reason.MALFORMED_JSON),
        ("missing_channels", Reason.MISSING_CHANNELS),
        ("duplicate", Reason.DUPLICATE_TIME),
        ("out_of_order", Reason.OUT_OF_ORDER),
    ],
)
def test_a_bad_record_goes_to_dead_letters_and_does_not_disturb_good_ones(
    tiny_bundle, good_records, clean_result, kind, reason
):
    recs = good_records
    faults = _faults(clean_result)
    last, old = _good_at(recs, faults, 599), _good_at(recs, faults, 50)
    bad = _bad_record(kind, recs, last, old)
    result = processor(tiny_bundle).process([*recs[: last + 1], bad, *recs[last + 1 :]])
    assert [
        (d.record.offset, d.reason) for d in result.dead_letters if d.record.offset not in faults
    ] == [(10_000, reason)]
    assert {d.record.offset for d in result.dead_letters} == faults | {10_000}
    assert (result.readings, result.skipped) == (clean_result.readings, 0)
    assert_same_outputs(collect([result]), collect([clean_result]))


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("duplicate", Reason.DUPLICATE_TIME),
        ("out_of_order", Reason.OUT_OF_ORDER),
        # a redelivery (e.g. after a rebalance) keeps its original offset: inside the
        # turbine's state already, so skipped, not dead-lettered
        ("redelivered_last", None),
        ("redelivered_old", None),
    ],
)
def test_a_repeated_reading_in_the_next_batch(
    tiny_bundle, good_records, clean_result, case, reason
):
    """The next batch is checked against the turbine's state from the batch before."""
    recs = good_records
    faults = _faults(clean_result)
    last, old = _good_at(recs, faults, 599), _good_at(recs, faults, 50)
    if case == "redelivered_last":
        bad = recs[last]
    elif case == "redelivered_old":
        bad = recs[old]
    else:
        bad = _bad_record(case, recs, last, old)
    proc = processor(tiny_bundle)
    first = proc.process(recs[: last + 1])
    second = proc.process([bad, *recs[last + 1 :]])
    new = [
        (d.record.offset, d.reason) for d in second.dead_letters if d.record.offset not in faults
    ]
    assert new == ([] if reason is None else [(10_000, reason)])
    assert second.skipped == (1 if reason is None else 0)
    assert first.readings + second.readings == clean_result.readings
    assert_same_outputs(collect([first, second]), collect([clean_result]))


@given(data=st.data())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_mix_of_records_is_accounted_for_and_never_crashes(tiny_bundle, messages, data):
    """Valid, duplicate, out-of-order and malformed records in any order and batching."""
    base = messages[:120]
    pool = records(base)
    chosen = data.draw(st.lists(st.sampled_from(range(len(pool))), min_size=1, max_size=150))
    garbage = data.draw(
        st.lists(st.sampled_from([b"{", b"[]", b"null", b'{"turbine_id": 1}']), max_size=5)
    )
    recs = [InputRecord(0, i, pool[k].key, pool[k].value) for i, k in enumerate(chosen)]
    recs += [InputRecord(0, len(recs) + i, b"01", g) for i, g in enumerate(garbage)]
    order = data.draw(st.permutations(range(len(recs))))
    recs = [InputRecord(0, i, recs[j].key, recs[j].value) for i, j in enumerate(order)]
    size = data.draw(st.integers(1, 40))
    proc = processor(tiny_bundle)
    for start in range(0, len(recs), size):
        batch = recs[start : start + size]
        result = proc.process(batch)
        assert result.readings + len(result.dead_letters) + result.skipped == len(batch)
        assert all(np.isfinite(result.points.score))


@pytest.mark.parametrize("member", ["deep_svdd:hard", "pca", "iforest", "power_curve_rule", "vae"])
def test_the_daemon_pipeline_runs_other_family_members(member, tiny_farm, messages):
    """Any member's bundle streams like IAE-LSTM-KL: same windows scored as in batch."""
    from wtbi_monitor.training.dataset import build_windows
    from wtbi_monitor.training.train import fit_member, prepare_training_data, split_history

    train, val = split_history(tiny_farm, SETTINGS.training)
    bundle = fit_member(member, prepare_training_data(train, val, SETTINGS), SETTINGS)
    proc = processor(bundle, quantile=0.1, messages=messages)  # many windows need channels
    points, _ = collect(list(replay_messages(proc, messages, batch_records=500)))
    assert len(points) > 1000
    # the same windows scored offline (first turbine): identical scores
    frame = tiny_farm[0]
    windows = build_windows([frame], SETTINGS.preprocessing, derived=bundle.derived)
    offline = dict(
        zip(
            windows.time_ms.tolist(),
            bundle.score_windows(windows.series.windows()).score.tolist(),
            strict=True,
        )
    )
    streamed = {t: s for (tid, t), (s, _) in points.items() if tid == frame.turbine_id}
    common = sorted(set(streamed) & set(offline))
    assert len(common) > 500
    np.testing.assert_allclose(
        [streamed[t] for t in common], [offline[t] for t in common], rtol=1e-5, atol=1e-6
    )
    hot = [top for s, top in points.values() if s >= proc.clear_level]
    assert len(hot) > 100
    if bundle.detector.attributes_channels:
        assert np.mean([top[0] >= 0 for top in hot]) > 0.9, "hot windows name their channels"
    else:
        assert all(top[0] == -1 for top in hot)
