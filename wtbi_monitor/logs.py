"""structlog set-up: JSON lines when not on a terminal, readable console output when on one.

Configured once, by the command line. The standard library's loggers (aiokafka, urllib3)
are bridged into the same renderer so that a log file holds one format only.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from typing import Literal

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(
    level: Literal["debug", "info", "warning", "error"] = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
) -> None:
    """Configure structlog and the standard library logging to one renderer on stderr.

    Args:
        level: minimum level to emit.
        fmt: "json" for JSON lines, "console" for humans, "auto" for console on a TTY.
    """
    numeric = _LEVELS.get(level, logging.ERROR)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    handler.addFilter(REPEATS)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Chatty libraries: their INFO lines are not useful to an operator.
    for name in ("aiokafka", "urllib3", "matplotlib", "influxdb_client"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


class RepeatFilter(logging.Filter):
    """One line per kind per interval from libraries that log every retry.

    aiokafka logs each failed connection attempt (about 100 lines a second while a broker
    is down); a flooded log hides the one line that matters and fills disks. A "kind" is a
    foreign logger's (name, level, message template); the daemon's own structlog lines are
    never filtered. Suppressed lines are counted (`take_suppressed`, exported by the service
    as `wtbi_log_lines_suppressed_total`), and the next printed line of the kind says how
    many were left out.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, int, str], float] = {}
        self._held: Counter[tuple[str, int, str]] = Counter()
        self._suppressed: Counter[str] = Counter()
        self._mutex = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """True to print the record."""
        if record.levelno < logging.WARNING or not isinstance(record.msg, str):
            return True  # structlog's own events carry a dict, not a template
        if record.name.startswith("wtbi_monitor"):
            return True
        kind = (record.name, record.levelno, record.msg)
        now = time.monotonic()
        with self._mutex:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._held[kind] += 1
                self._suppressed[record.name.split(".")[0]] += 1
                return False
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{record.msg} [{held} similar lines suppressed in the last interval]"
        return True

    def take_suppressed(self) -> dict[str, int]:
        """Suppressed lines per top-level logger since the last call."""
        with self._mutex:
            out = dict(self._suppressed)
            self._suppressed.clear()
        return out


REPEATS = RepeatFilter()


def take_suppressed() -> dict[str, int]:
    """Library log lines suppressed since the last call, per logger (for the metrics)."""
    return REPEATS.take_suppressed()


def set_repeat_interval(interval_s: float) -> None:
    """How long a repeated library line stays suppressed after it was printed."""
    REPEATS.interval_s = interval_s


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a named structlog logger (cheap; safe to call at import time)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
