"""The streaming processor: batch-size independence, recovery from snapshots, bad records."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_SETTINGS
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings
from wtbi_monitor.errors import Reason
from wtbi_monitor.replay import frames_to_messages, replay_messages
from wtbi_monitor.scoring import BatchResult, InputRecord, StreamProcessor

SETTINGS = Settings(**TINY_SETTINGS)


MESSAGES: list[list[tuple[int, str, bytes]]] = []


@pytest.fixture(scope="module")
def messages(tiny_farm):
    """About 3 hours of both turbines of the tiny farm."""
    msgs = frames_to_messages(tiny_farm, SETTINGS.preprocessing.channels)
    MESSAGES[:] = [msgs[: 3 * 3600 // 7 * 2]]
    return MESSAGES[0]


def decoder(bundle) -> RecordDecoder:
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


def processor(bundle, quantile: float = 0.8, messages=None) -> StreamProcessor:
    # A threshold at a quantile of the test stream's own scores: alarms are certain, so the
    # comparisons below always cover raised AND cleared alarm events, whatever the tiny
    # model learned.
    low = float(np.quantile(stream_scores(bundle, messages or MESSAGES[0]), quantile))
    return StreamProcessor(
        dataclasses.replace(bundle, threshold_override=low),
        SETTINGS.preprocessing,
        SETTINGS.alarm,
        decoder(bundle),
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


def records(msgs, start: int = 0) -> list[InputRecord]:
    return [InputRecord(0, start + i, t.encode(), m) for i, (_, t, m) in enumerate(msgs)]


def test_outputs_do_not_depend_on_batch_size(tiny_bundle, messages):
    a = collect(list(replay_messages(processor(tiny_bundle), messages, batch_records=2000)))
    b = collect(list(replay_messages(processor(tiny_bundle), messages, batch_records=37)))
    assert len(a[0]) > 1000
    assert len(a[1]) >= 2, "the tiny model should raise and clear at least one alarm"
    assert a[0].keys() == b[0].keys()
    for key, (score, top) in a[0].items():
        assert b[0][key][1] == top
        assert b[0][key][0] == pytest.approx(score, rel=1e-6, abs=1e-9)
    assert [e[:4] for e in a[1]] == [e[:4] for e in b[1]]


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
    assert resumed[0].keys() == whole[0].keys()
    assert resumed[1] == whole[1]


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
    assert after[0].keys() == whole[0].keys()
    assert after[1] == whole[1]


def test_bad_records_go_to_dead_letters_and_do_not_disturb_good_ones(tiny_bundle, messages):
    good = messages[:3000]
    recs = records(good)
    bad = [
        InputRecord(0, 10_000, b"T1", b"{oops"),
        InputRecord(0, 10_001, recs[100].key, recs[100].value),  # duplicate time
        InputRecord(0, 10_002, recs[50].key, recs[50].value),  # out of order
        InputRecord(0, 10_003, b"01", orjson.dumps({"turbine_id": "01", "time": 1, "values": {}})),
    ]
    mixed = recs[:1500] + bad + recs[1500:]
    result = processor(tiny_bundle).process(mixed)
    clean = processor(tiny_bundle).process(recs)
    # the tiny farm's own sensor faults (e.g. -273.15 C) are dead-lettered in both runs
    faults = [d.record.offset for d in clean.dead_letters]
    assert {d.reason for d in clean.dead_letters} <= {Reason.OUT_OF_RANGE}
    reasons = [d.reason for d in result.dead_letters if d.record.offset not in faults]
    assert reasons[0] == Reason.MALFORMED_JSON
    assert Reason.DUPLICATE_TIME in reasons or Reason.OUT_OF_ORDER in reasons
    assert Reason.MISSING_CHANNELS in reasons or Reason.OUT_OF_ORDER in reasons
    assert len(reasons) == 4
    np.testing.assert_allclose(
        np.sort(result.points.score), np.sort(clean.points.score), rtol=1e-6, atol=1e-9
    )
    assert result.readings == clean.readings


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
