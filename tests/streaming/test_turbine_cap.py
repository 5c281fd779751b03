"""service.max_turbines: ids beyond the cap are dead-lettered, never tracked."""

from __future__ import annotations

import orjson

from tests.conftest import TINY_SETTINGS
from wtbi_monitor.codec import RecordDecoder
from wtbi_monitor.config import Settings
from wtbi_monitor.domain import InputRecord
from wtbi_monitor.errors import Reason
from wtbi_monitor.replay import frames_to_messages
from wtbi_monitor.scoring import StreamProcessor

SETTINGS = Settings(**TINY_SETTINGS)


def as_turbine(message: bytes, turbine: str) -> bytes:
    doc = orjson.loads(message)
    doc["turbine_id"] = turbine
    return orjson.dumps(doc)


def records(tiny_farm, turbines: list[str], n: int, first_offset: int = 0) -> list[InputRecord]:
    """`n` readings of turbine 01, once per id, interleaved, each id in its own partition."""
    msgs = [m for _t, tid, m in frames_to_messages(tiny_farm, SETTINGS.preprocessing.channels)]
    msgs = [m for m in msgs if orjson.loads(m)["turbine_id"] == "01"][:n]
    out = []
    for i, message in enumerate(msgs):
        for p, tid in enumerate(turbines):
            out.append(
                InputRecord(p, first_offset + i, tid.encode(), as_turbine(message, tid), 0, "in")
            )
    return out


def processor(bundle, cap: int | None) -> StreamProcessor:
    decoder = RecordDecoder(
        bundle.source_channels, max_future_s=1e12, valid_ranges=SETTINGS.preprocessing.valid_ranges
    )
    return StreamProcessor(
        bundle, SETTINGS.preprocessing, SETTINGS.alarm, decoder, 256, max_turbines=cap
    )


def test_ids_beyond_the_cap_are_dead_lettered_and_tracked_ones_unaffected(tiny_bundle, tiny_farm):
    batch = records(tiny_farm, ["A", "B", "C"], 60)
    capped = processor(tiny_bundle, 2).process(batch)
    free = processor(tiny_bundle, None).process(batch)
    assert set(capped.touched) == {"A", "B"}
    assert {d.reason for d in capped.dead_letters} == {Reason.TOO_MANY_TURBINES}
    assert sorted(d.record.offset for d in capped.dead_letters) == list(range(60))
    assert all(d.record.key == b"C" for d in capped.dead_letters)
    assert capped.readings == 120
    # The tracked turbines are scored exactly as without a cap.
    keep = [i for i, t in enumerate(free.points.turbine) if t != "C"]
    assert list(capped.points.turbine) == [free.points.turbine[i] for i in keep]
    assert capped.points.score.tolist() == free.points.score[keep].tolist()


def test_a_freed_slot_admits_a_new_id(tiny_bundle, tiny_farm):
    proc = processor(tiny_bundle, 2)
    first = proc.process(records(tiny_farm, ["A", "B"], 30))
    assert not first.dead_letters
    third = proc.process(records(tiny_farm, ["A", "B", "C"], 30, first_offset=30)[2::3])
    assert len(third.dead_letters) == 30  # C while A and B are tracked
    proc.drop_partitions({0})  # A's partition is revoked
    again = proc.process(records(tiny_farm, ["A", "B", "C"], 30, first_offset=30)[2::3])
    assert not again.dead_letters
    assert set(proc.turbines) == {"B", "C"}


def test_the_cap_is_exact_at_the_boundary(tiny_bundle, tiny_farm):
    batch = records(tiny_farm, ["A", "B"], 30)
    assert not processor(tiny_bundle, 2).process(batch).dead_letters
    assert len(processor(tiny_bundle, 1).process(batch).dead_letters) == 30
