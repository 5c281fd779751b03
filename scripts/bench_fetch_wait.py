"""The broker's share of the latency: Kafka timestamp -> `getmany`, per fetch_max_wait_ms.

A producer paces small messages on the local broker (Tansu, started here); a bare
aiokafka consumer (no processing) polls with `getmany`, and each message's delay is the
moment it was returned minus its Kafka timestamp. Run for several `fetch_max_wait_ms`
values in the same run; the first value is the baseline the others are compared with.
This is the floor of the daemon's latency for a given `kafka.fetch_max_wait_ms`:
bench_daemon.py measures the whole path.

    python scripts/bench_fetch_wait.py                       # 500, 100, 50, 20 ms
    python scripts/bench_fetch_wait.py --waits 500 20 --messages 300 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from wtbi_devtools.localenv import start_all

from wtbi_monitor.adapters.kafka import ensure_topics
from wtbi_monitor.config import KafkaSettings


async def delays(
    bootstrap: str, topic: str, wait_ms: int, messages: int, interval_s: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Milliseconds from each message's Kafka timestamp to its return by getmany."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, acks="all", enable_idempotence=False
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=wait_ms,
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up", key=b"0")
        while not await consumer.getmany(timeout_ms=200):  # joined, positioned
            pass

        async def produce() -> None:
            for i in range(messages):
                await producer.send(topic, b"x" * 600, key=str(i % 8).encode())
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(produce())
        seen: list[float] = []
        deadline = time.monotonic() + messages * interval_s + 5.0
        while len(seen) < messages and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            now_ms = time.time() * 1000
            seen += [now_ms - r.timestamp for records in batches.values() for r in records]
        await task
        return np.asarray(seen)
    finally:
        await consumer.stop()
        await producer.stop()


async def run(waits: list[int], messages: int, interval_s: float) -> dict[str, Any]:
    """Start the broker, measure every wait, stop it."""
    with tempfile.TemporaryDirectory(prefix="wtbi-bench-") as tmp:
        servers = start_all(Path(tmp))
        try:
            out: dict[str, Any] = {"messages": messages, "interval_s": interval_s, "waits": {}}
            for wait in waits:
                topic = f"bench-wait-{wait}"
                await ensure_topics(
                    KafkaSettings(bootstrap_servers=servers.bootstrap, input_topic=topic)
                )
                got = await delays(servers.bootstrap, topic, wait, messages, interval_s)
                out["waits"][str(wait)] = {
                    "received": int(got.size),
                    "p50_ms": float(np.percentile(got, 50)),
                    "p99_ms": float(np.percentile(got, 99)),
                }
            return out
        finally:
            servers.stop()


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, nargs="+", default=[500, 100, 50, 20])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.waits, args.messages, args.interval_ms / 1000))
    base = result["waits"][str(args.waits[0])]
    print(f"{args.messages} messages every {args.interval_ms:g} ms on the local broker")
    for wait, r in result["waits"].items():
        print(
            f"fetch_max_wait_ms {wait:>4}: p50 {r['p50_ms']:6.0f} ms, p99 {r['p99_ms']:6.0f} ms "
            f"({r['p99_ms'] / base['p99_ms']:.2f}x the p99 at {args.waits[0]} ms), "
            f"{r['received']} received"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
