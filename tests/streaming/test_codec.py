"""The input contract: accepted forms and every rejection reason."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from wtbi_monitor.codec import RecordDecoder, encode_reading, parse_time_ms
from wtbi_monitor.errors import Reason, RecordError

CH = ("a", "b", "c")
NOW_S = 1_700_000_000.0
dec = RecordDecoder(CH, max_bytes=400, max_future_s=60, clock=lambda: NOW_S)


def msg(**over) -> bytes:
    doc = {"turbine_id": "T1", "time": 1_600_000_000_000, "values": {"a": 1, "b": 2.5, "c": -3}}
    doc.update(over)
    return orjson.dumps(doc)


def reason(payload: bytes | None, key: bytes | None = None) -> str:
    with pytest.raises(RecordError) as info:
        dec.decode(payload, key)
    return info.value.reason


def test_object_and_array_forms_decode_to_the_same_reading():
    a = dec.decode(msg(), b"T1")
    b = dec.decode(msg(schema=2, values=[1, 2.5, -3]))
    assert a.turbine_id == b.turbine_id == "T1"
    assert a.time_ms == b.time_ms == 1_600_000_000_000
    np.testing.assert_array_equal(a.values, [1.0, 2.5, -3.0])
    np.testing.assert_array_equal(a.values, b.values)
    assert dec.decode(msg(group=4)).group == 4


def test_times_rfc3339_and_epoch_ms():
    assert parse_time_ms("2015-11-01T00:00:07Z") == 1446336007000
    assert parse_time_ms("2015-11-01 00:00:07") == 1446336007000  # naive = UTC
    assert parse_time_ms("2015-11-01T01:00:07+01:00") == 1446336007000
    assert parse_time_ms(1446336007000) == 1446336007000


def test_encode_decode_round_trip_is_exact():
    values = np.array([0.1, 1e-300, 12345.678901234567])
    for compact in (False, True):
        r = dec.decode(encode_reading("T9", 1, values, CH, compact=compact))
        np.testing.assert_array_equal(r.values, values)


BAD_RECORDS = [
    (None, None, Reason.MALFORMED_JSON),
    (b"{not json", None, Reason.MALFORMED_JSON),
    (b"[1, 2]", None, Reason.NOT_AN_OBJECT),
    (orjson.dumps({"turbine_id": "T1", "values": {}}), None, Reason.MISSING_FIELD),
    (msg(schema=7), None, Reason.BAD_SCHEMA),
    (msg(turbine_id=""), None, Reason.BAD_TURBINE_ID),
    (msg(turbine_id="T\n1"), None, Reason.BAD_TURBINE_ID),
    (msg(), b"T2", Reason.KEY_MISMATCH),
    (msg(time="yesterday"), None, Reason.BAD_TIME),
    (msg(time=True), None, Reason.BAD_TIME),
    (msg(time=int(NOW_S * 1000) + 120_000), None, Reason.FUTURE_TIME),
    (msg(values={"a": 1, "b": 2}), None, Reason.MISSING_CHANNELS),
    (msg(values={"a": 1, "b": 2, "c": 3, "d": 4}), None, Reason.UNKNOWN_CHANNELS),
    (msg(schema=2, values=[1, 2]), None, Reason.WRONG_LENGTH),
    (msg(values={"a": "1", "b": 2, "c": 3}), None, Reason.BAD_VALUE_TYPE),
    (msg(values={"a": True, "b": 2, "c": 3}), None, Reason.BAD_VALUE_TYPE),
    (msg(values={"a": None, "b": 2, "c": 3}), None, Reason.BAD_VALUE_TYPE),
    (
        json.dumps(
            {"turbine_id": "T1", "time": 1, "values": {"a": float("nan"), "b": 1, "c": 1}}
        ).encode(),
        None,
        Reason.NON_FINITE,
    ),
    (msg(group="x"), None, Reason.BAD_GROUP),
    (b"{" + b" " * 500 + b"}", None, Reason.TOO_LARGE),
]


@pytest.mark.parametrize(("payload", "key", "expected"), BAD_RECORDS)
def test_each_bad_record_has_its_reason(payload, key, expected):
    assert reason(payload, key) == expected


def test_finiteness_check_is_exact_at_the_edges_of_the_float_range():
    dec = RecordDecoder(CH, clock=lambda: 2e9)
    huge = 1.7e308  # finite, but the sum of three overflows: must still be accepted
    ok = dec.decode(msg(values={"a": huge, "b": huge, "c": huge}), b"T1")
    assert np.all(ok.values == huge)
    # numbers beyond the float range, however they are written, are never accepted
    for big in ("1" + "0" * 320, "1e999", "-1e999"):
        payload = b'{"turbine_id":"T1","time":1,"values":{"a":%s,"b":1,"c":2}}' % big.encode()
        assert reason(payload) in {Reason.NON_FINITE, Reason.MALFORMED_JSON}
    bad_type = msg(values={"a": 1.0, "b": True, "c": 2.0})
    with pytest.raises(RecordError, match="b is bool"):
        dec.decode(bad_type, b"T1")


def test_batch_decoding_gives_every_verdict_of_one_by_one_decoding():
    """decode_batch (the daemon's path) == decode per message: readings, reasons, details."""
    ranged = RecordDecoder(
        CH, max_bytes=400, max_future_s=60, clock=lambda: NOW_S, valid_ranges={"b": (0.0, 10.0)}
    )
    good = [
        (msg(), b"T1"),
        (msg(schema=2, values=[1, 2.5, -3], group=3), None),
        (msg(time="2020-09-13T12:26:40.5"), b"T1"),
        (msg(time=1_600_000_000_000.4, turbine_id="T2", values={"c": 1, "b": 2, "a": 3}), None),
        (  # an integer beyond the float range
            json.dumps(
                {"turbine_id": "T1", "time": 1, "values": {"a": 10**400, "b": 1, "c": 1}}
            ).encode(),
            None,
        ),
        (msg(values={"a": 1e308, "b": 1, "c": 1e308}), None),  # a sum that overflows
    ]
    out_of_range = [(msg(values={"a": 1, "b": 11.0, "c": 3}), None)]
    messages = [(p, k) for p, k, _ in BAD_RECORDS] + good + out_of_range
    order = np.random.default_rng(0).permutation(len(messages))
    messages = [messages[i] for i in order]

    batch = ranged.decode_batch(messages)

    decoded = dict(zip(batch.record, range(len(batch.record)), strict=True))
    assert set(decoded) | set(batch.errors) == set(range(len(messages)))
    assert not set(decoded) & set(batch.errors)
    assert batch.record == sorted(batch.record)  # batch order kept
    for i, (payload, key) in enumerate(messages):
        try:
            one = ranged.decode(payload, key)
        except RecordError as exc:
            verdict = (exc.reason, exc.detail)
        else:
            verdict = None
        if verdict is not None:
            assert i in batch.errors, f"message {i} should be rejected: {verdict}"
            assert (batch.errors[i].reason, batch.errors[i].detail) == verdict
            continue
        row = decoded[i]
        assert batch.turbine[row] == one.turbine_id
        assert batch.time_ms[row] == one.time_ms
        np.testing.assert_array_equal(batch.values[row], one.values)
        assert batch.group[row] == (-1 if one.group is None else one.group)
    assert len(batch.record) == 5  # all good ones but the integer beyond the float range
    assert Reason.OUT_OF_RANGE in {e.reason for e in batch.errors.values()}


def test_an_empty_batch_decodes_to_nothing():
    batch = dec.decode_batch([])
    assert batch.record == []
    assert batch.values.shape == (0, len(CH))
    assert batch.errors == {}
