"""Helpers for scripts/demo.sh: wait for the daemon, then show the alarms it wrote.

    python scripts/demo_check.py wait --metrics http://127.0.0.1:PORT --records N
    python scripts/demo_check.py show --episodes FARM/episodes.json

`wait` polls the daemon's /metrics until N input records have been fully handled (scored and
acknowledged by the sinks, or dead-lettered). `show` reads the alarm events back from BOTH
outputs: the database (VictoriaMetrics' export API, the local default database; on a real
InfluxDB use a Flux query instead) and the alert topic, and prints them beside the icing
episodes the generator injected. The settings (addresses, topic, measurement) come from the
same configuration and WTBI_ environment variables as the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from wtbi_monitor.config import Settings, load_settings

_HANDLED = (
    "wtbi_readings_accepted_total",
    "wtbi_records_rejected_total",
    "wtbi_records_replayed_skipped_total",
)


def _metrics(url: str) -> dict[str, float]:
    """Sum of every sample per metric name (labels summed over)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


def wait(url: str, records: int, timeout_s: float) -> int:
    """Block until `records` records are handled; 1 on timeout."""
    deadline = time.monotonic() + timeout_s
    handled = 0.0
    while time.monotonic() < deadline:
        try:
            m = _metrics(url)
        except OSError:
            time.sleep(0.5)
            continue
        handled = sum(m.get(k, 0.0) for k in _HANDLED)
        print(
            f"\r  handled {handled:,.0f} / {records:,} records, "
            f"{m.get('wtbi_windows_scored_total', 0):,.0f} windows scored, "
            f"{m.get('wtbi_alarm_events_total', 0):.0f} alarm events",
            end="",
            flush=True,
        )
        if handled >= records:
            print()
            return 0
        time.sleep(1.0)
    print(f"\ntimed out: {handled:,.0f} of {records:,} records handled")
    return 1


def _iso(ms: float | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def database_alarms(settings: Settings) -> list[dict[str, Any]]:
    """Alarm transition points from the local database (VictoriaMetrics export API)."""
    base = settings.influx.url.rstrip("/")
    flush = urllib.request.Request(f"{base}/internal/force_flush", method="POST")
    urllib.request.urlopen(flush, timeout=10).read()
    series = f"{settings.influx.alarm_measurement}_active"
    data = urllib.parse.urlencode({"match[]": series}).encode()
    with urllib.request.urlopen(f"{base}/api/v1/export", data=data, timeout=30) as r:
        rows = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    points = [{**row["metric"], "time_ms": ts} for row in rows for ts in row["timestamps"]]
    return sorted(points, key=lambda p: (p["time_ms"], p.get("turbine", "")))


async def topic_alarms(settings: Settings) -> list[dict[str, Any]]:
    """Every alarm event on the alert topic, decoded."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()
        topic = settings.kafka.alert_topic
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[dict[str, Any]] = []
        idle = 0
        while idle < 4:
            batch = await consumer.getmany(timeout_ms=300)
            records = [r for rs in batch.values() for r in rs]
            idle = 0 if records else idle + 1
            out += [json.loads(r.value) for r in records if r.value is not None]
        return out
    finally:
        await consumer.stop()


def show(settings: Settings, episodes: Path | None) -> int:
    """Print injected episodes, database alarm points and alert-topic events."""
    if episodes is not None:
        injected = json.loads(episodes.read_text())["episodes"]
        print("Icing injected by the generator (labelled part):")
        for e in injected:
            print(
                f"  turbine {e['turbine_id']}  {_iso(e['label_start_ms'])} -> "
                f"{_iso(e['label_end_ms'])}  severity {e['peak_severity']:.2f}  {e['kind']}"
            )
    db = database_alarms(settings)
    print(f"\nAlarm points in the database ({settings.influx.alarm_measurement}):")
    for p in db:
        channels = ", ".join(p[k] for k in ("top1", "top2", "top3") if k in p)
        print(
            f"  {_iso(p['time_ms'])}  turbine {p.get('turbine')}  {p.get('state', '?'):7s} "
            f"id {p.get('alarm_id')}  [{channels}]"
        )
    events = asyncio.run(topic_alarms(settings))
    print(f"\nAlarm events on the alert topic ({settings.kafka.alert_topic}):")
    for ev in events:
        channels = ", ".join(f"{c['channel']} {c['share']:.0%}" for c in ev.get("top_channels", []))
        print(
            f"  turbine {ev['turbine_id']}  {ev['state']:7s} start {_iso(ev['start_ms'])}  "
            f"end {_iso(ev.get('end_ms'))}  peak {ev['peak_score']:.3g} "
            f"(threshold {ev['threshold']:.3g}, {ev.get('evidence', 'model')})  [{channels}]"
        )
    if not db and not events:
        print("  (none)")
    if episodes is not None:
        print()
        print(verdict(json.loads(episodes.read_text())["episodes"], events))
    return 0


def _duration(start: float, end: float) -> str:
    minutes = max(0.0, (end - start) / 60_000)
    return f"{minutes / 60:.1f} h" if minutes >= 90 else f"{minutes:.0f} min"


def verdict(injected: list[dict[str, Any]], events: list[dict[str, Any]]) -> str:
    """Per labelled episode: detected or missed, its alarms (count, delay, durations).

    Then the alarms that overlapped no icing at all (false alarms).
    """
    spans: dict[str, list[Any]] = {}  # alarm id -> [turbine, start, end, raised, evidence]
    for e in sorted(events, key=lambda e: e["event_time_ms"]):
        span = spans.setdefault(
            e["alarm_id"],
            [e["turbine_id"], e["start_ms"], e["event_time_ms"], e["event_time_ms"], ""],
        )
        span[4] = e.get("evidence", "model")
        if e["state"] == "cleared":
            span[2] = e["end_ms"]
    lines, used = [], set()
    for ep in (e for e in injected if e["labelled"]):
        hits = sorted(
            (a for a, (t, start, end, _, _) in spans.items()
             if t == ep["turbine_id"] and start <= ep["label_end_ms"] and end >= ep["start_ms"]),
            key=lambda a: spans[a][1],
        )  # fmt: skip
        used |= set(hits)
        head = (
            f"  turbine {ep['turbine_id']} {ep['kind']} icing "
            f"{_iso(ep['label_start_ms'])} -> {_iso(ep['label_end_ms'])} "
            f"({_duration(ep['label_start_ms'], ep['label_end_ms'])}): "
        )
        if not hits:
            lines.append(head + "MISSED")
            continue
        delay = (spans[hits[0]][3] - ep["label_start_ms"]) / 60_000
        alarms = ", ".join(f"{_duration(spans[a][1], spans[a][2])} ({spans[a][4]})" for a in hits)
        lines.append(
            head + f"DETECTED, {len(hits)} alarm{'s' if len(hits) > 1 else ''}: {alarms}; "
            f"raised {delay:+.0f} min after the labelled start"
        )
    # Alarms overlapping an episode's unlabelled build-up or tail are not counted as false.
    near = [
        a for a, (t, start, end, _, _) in spans.items()
        if any(ep["turbine_id"] == t and start <= ep["end_ms"] and end >= ep["start_ms"]
               for ep in injected)
    ]  # fmt: skip
    false = [a for a in spans if a not in used and a not in near]
    lines.append(f"  alarms outside any icing: {len(false)}")
    for a in false:
        t, start, end, _, evidence = spans[a]
        lines.append(f"    turbine {t} {_iso(start)}, {_duration(start, end)} ({evidence})")
    return "\n".join(["Verdict:", *lines])


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(prog="demo_check.py")
    parser.add_argument("--config", type=Path, default=None)
    sub = parser.add_subparsers(dest="action", required=True)
    w = sub.add_parser("wait")
    w.add_argument("--metrics", required=True, help="the daemon's base URL")
    w.add_argument("--records", type=int, required=True)
    w.add_argument("--timeout", type=float, default=240.0)
    s = sub.add_parser("show")
    s.add_argument("--episodes", type=Path)
    args = parser.parse_args(argv)
    if args.action == "wait":
        return wait(args.metrics, args.records, args.timeout)
    return show(load_settings(args.config), args.episodes)


if __name__ == "__main__":
    sys.exit(main())
