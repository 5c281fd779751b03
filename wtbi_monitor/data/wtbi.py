"""Reading and writing the WTBI data format (docs/data-format.md).

Per turbine: ``NN_data.csv`` (or ``.parquet``) with ``time``, the channel columns and
``group``; ``NN_failureInfo.csv`` and ``NN_normalInfo.csv`` with ``startTime,endTime``
intervals of icing and of confirmed normal operation. Rows inside neither interval are
UNKNOWN (transition zones). A per-row ``label`` column (1 icing, 0 normal, empty unknown)
may replace the interval files. A single file may also hold many turbines, told apart by a
``turbine_id`` column.

Bad files give a `DataFormatError` that names the file, the row and the column. Rows with
missing values are dropped and counted (never silently): the caller logs the count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from wtbi_monitor.domain import Label
from wtbi_monitor.errors import DataFormatError
from wtbi_monitor.preprocessing import check_strictly_increasing

TIME_COLUMN = "time"
GROUP_COLUMN = "group"
LABEL_COLUMN = "label"
TURBINE_COLUMN = "turbine_id"
_KNOWN_EXTRA = {TIME_COLUMN, GROUP_COLUMN, LABEL_COLUMN, TURBINE_COLUMN}
_DATA_FILE = re.compile(r"^(?P<tid>.+)_data\.(?P<ext>csv|parquet)$")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass
class TurbineFrame:
    """One turbine's readings in the configured channel order.

    Attributes:
        turbine_id: identifier (from the file name or the turbine_id column).
        times_ms: int64 (N,), strictly increasing.
        values: float64 (N, C), finite.
        groups: int64 (N,) recording-block ids, or None.
        labels: int8 (N,) of `Label` values.
        dropped_rows: rows removed because a channel value was missing or not finite.
        source: where the data came from, for messages.
    """

    turbine_id: str
    times_ms: NDArray[np.int64]
    values: NDArray[np.float64]
    groups: NDArray[np.int64] | None
    labels: NDArray[np.int8]
    dropped_rows: int = 0
    source: str = ""
    channels: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.times_ms.shape[0])

    def slice_time(self, start_ms: int | None, end_ms: int | None) -> TurbineFrame:
        """The rows with start_ms <= time < end_ms (None: unbounded)."""
        lo = 0 if start_ms is None else int(np.searchsorted(self.times_ms, start_ms, "left"))
        hi = len(self) if end_ms is None else int(np.searchsorted(self.times_ms, end_ms, "left"))
        return TurbineFrame(
            turbine_id=self.turbine_id,
            times_ms=self.times_ms[lo:hi],
            values=self.values[lo:hi],
            groups=None if self.groups is None else self.groups[lo:hi],
            labels=self.labels[lo:hi],
            dropped_rows=0,
            source=self.source,
            channels=self.channels,
        )


# ---------------------------------------------------------------------------- times


def parse_times(column: pd.Series, what: str) -> NDArray[np.int64]:
    """Parse a time column (text such as '2015-11-01 20:20:16' or RFC 3339, or epoch ms).

    Naive times are taken as UTC. Raises `DataFormatError` naming the first bad row.
    """
    if pd.api.types.is_numeric_dtype(column):
        numeric = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(numeric)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            msg = f"{what}: missing time at row {row + 1}"
            raise DataFormatError(msg)
        return numeric.astype(np.int64)
    text = column.astype("string")
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad_mask = parsed.isna().to_numpy()
    if bad_mask.any():
        row = int(np.flatnonzero(bad_mask)[0])
        msg = f"{what}: unparseable time {text.iloc[row]!r} at row {row + 1}"
        raise DataFormatError(msg)
    # pandas picks the resolution itself (s, ms, us or ns): convert explicitly to ms.
    ms: NDArray[np.int64] = np.asarray(parsed.dt.as_unit("ms").astype("int64"), dtype=np.int64)
    return ms


def format_times(times_ms: NDArray[np.int64]) -> pd.Series:
    """Times as WTBI text ('2015-11-01 20:20:16', UTC, second precision)."""
    return pd.Series(pd.to_datetime(times_ms, unit="ms", utc=True).strftime(_TIME_FORMAT))


# ---------------------------------------------------------------------------- reading


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype={TIME_COLUMN: "string", TURBINE_COLUMN: "string"})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        msg = f"{path}: cannot read the file ({exc})"
        raise DataFormatError(msg) from exc


def read_intervals(path: Path) -> NDArray[np.int64]:
    """Read a startTime,endTime interval file into an int64 array of shape (K, 2), in ms."""
    df = _read_table(path)
    missing = {"startTime", "endTime"} - set(df.columns)
    if missing:
        msg = f"{path}: missing column(s) {sorted(missing)}; expected startTime,endTime"
        raise DataFormatError(msg)
    if df.empty:
        return np.empty((0, 2), dtype=np.int64)
    start = parse_times(df["startTime"], f"{path} startTime")
    end = parse_times(df["endTime"], f"{path} endTime")
    if np.any(end < start):
        row = int(np.flatnonzero(end < start)[0])
        msg = f"{path}: interval at row {row + 1} ends before it starts"
        raise DataFormatError(msg)
    return np.stack([start, end], axis=1).astype(np.int64)


def labels_from_intervals(
    times_ms: NDArray[np.int64],
    failure: NDArray[np.int64] | None,
    normal: NDArray[np.int64] | None,
) -> NDArray[np.int8]:
    """Label rows: ICING inside a failure interval, NORMAL inside a normal one, else UNKNOWN.

    Intervals are closed [start, end]. A row inside both is ICING (the safer reading).
    """
    labels = np.full(times_ms.shape[0], Label.UNKNOWN, dtype=np.int8)
    for intervals, value in ((normal, Label.NORMAL), (failure, Label.ICING)):
        if intervals is None:
            continue
        for start, end in intervals:
            lo = np.searchsorted(times_ms, start, "left")
            hi = np.searchsorted(times_ms, end, "right")
            labels[lo:hi] = value
    return labels


def _labels_from_column(column: pd.Series, what: str) -> NDArray[np.int8]:
    numeric = pd.to_numeric(column, errors="coerce")
    bad = numeric.notna() & ~numeric.isin([0, 1])
    bad |= column.notna() & numeric.isna() & (column.astype("string").str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        msg = f"{what}: label must be 1, 0 or empty, got {column.iloc[row]!r} at row {row + 1}"
        raise DataFormatError(msg)
    return numeric.fillna(Label.UNKNOWN).to_numpy(dtype=np.int8)


def frame_from_table(
    df: pd.DataFrame,
    channels: tuple[str, ...],
    *,
    turbine_id: str,
    source: str,
    failure: NDArray[np.int64] | None = None,
    normal: NDArray[np.int64] | None = None,
) -> TurbineFrame:
    """Validate one turbine's table and convert it to a `TurbineFrame`."""
    columns = [str(c) for c in df.columns]
    missing = [c for c in (TIME_COLUMN, *channels) if c not in columns]
    if missing:
        msg = f"{source}: missing column(s) {missing}"
        raise DataFormatError(msg)
    extra = [c for c in columns if c not in channels and c not in _KNOWN_EXTRA]
    if extra:
        msg = (
            f"{source}: unexpected column(s) {extra}; configure them as channels "
            "(preprocessing.channels) or remove them"
        )
        raise DataFormatError(msg)
    times = parse_times(df[TIME_COLUMN], source)
    raw = df[list(channels)]
    numeric = raw.apply(pd.to_numeric, errors="coerce")
    # Cells that were present but did not parse as numbers. Only those few are inspected as
    # text (converting all cells to strings would dominate the read time).
    suspects = np.argwhere((numeric.isna() & raw.notna()).to_numpy())
    for r, c in suspects:
        bad = raw.iloc[r, c]
        if str(bad).strip():
            msg = f"{source}: non-numeric value {bad!r} in column {channels[c]!r} at row {r + 1}"
            raise DataFormatError(msg)
    values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    groups = None
    if GROUP_COLUMN in columns:
        g = pd.to_numeric(df[GROUP_COLUMN], errors="coerce")
        if g.isna().any():
            row = int(np.flatnonzero(g.isna().to_numpy())[0])
            bad = df[GROUP_COLUMN].iloc[row]
            msg = f"{source}: group must be an integer, got {bad!r} at row {row + 1}"
            raise DataFormatError(msg)
        groups = g.to_numpy(dtype=np.int64)
    if LABEL_COLUMN in columns:
        labels = _labels_from_column(df[LABEL_COLUMN], source)
    else:
        labels = labels_from_intervals(times, failure, normal)
    check_strictly_increasing(times, source)
    finite = np.all(np.isfinite(values), axis=1)
    dropped = int(np.count_nonzero(~finite))
    if dropped:
        times, values, labels = times[finite], values[finite], labels[finite]
        groups = None if groups is None else groups[finite]
    return TurbineFrame(
        turbine_id=turbine_id,
        times_ms=times,
        values=np.ascontiguousarray(values),
        groups=groups,
        labels=labels,
        dropped_rows=dropped,
        source=source,
        channels=channels,
    )


def _sibling(path: Path, turbine_id: str, kind: str) -> Path | None:
    for ext in (".csv", ".parquet"):
        candidate = path.parent / f"{turbine_id}_{kind}{ext}"
        if candidate.is_file():
            return candidate
    return None


def read_turbine_file(path: Path, channels: tuple[str, ...]) -> list[TurbineFrame]:
    """Read one data file: one turbine (id from the file name) or many (turbine_id column)."""
    df = _read_table(path)
    match = _DATA_FILE.match(path.name)
    if TURBINE_COLUMN in df.columns:
        frames = []
        for tid, part in df.groupby(TURBINE_COLUMN, sort=True):
            frames.append(
                frame_from_table(
                    part.drop(columns=[TURBINE_COLUMN]).reset_index(drop=True),
                    channels,
                    turbine_id=str(tid),
                    source=f"{path} (turbine {tid})",
                )
            )
        return frames
    turbine_id = match.group("tid") if match else path.stem
    failure_path = _sibling(path, turbine_id, "failureInfo")
    normal_path = _sibling(path, turbine_id, "normalInfo")
    return [
        frame_from_table(
            df,
            channels,
            turbine_id=turbine_id,
            source=str(path),
            failure=read_intervals(failure_path) if failure_path else None,
            normal=read_intervals(normal_path) if normal_path else None,
        )
    ]


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and _DATA_FILE.match(p.name))


def detect_channels(path: Path) -> tuple[str, ...]:
    """The channel columns of the first data file under `path`, in file order."""
    files = _data_files(path) if path.exists() else []
    if not files:
        msg = f"{path}: no '<turbine>_data.csv' or '<turbine>_data.parquet' files found"
        raise DataFormatError(msg)
    first = files[0]
    if first.suffix == ".parquet":
        columns = [str(c) for c in pd.read_parquet(first).columns]
    else:
        columns = [str(c) for c in pd.read_csv(first, nrows=0).columns]
    return tuple(c for c in columns if c not in _KNOWN_EXTRA)


def read_farm(path: Path, channels: tuple[str, ...]) -> list[TurbineFrame]:
    """Read every turbine under `path` (a data file, or a folder searched recursively).

    Returns:
        One frame per turbine, sorted by turbine id.
    """
    if not path.exists():
        msg = f"data not found: {path}"
        raise DataFormatError(msg)
    files = _data_files(path)
    if not files:
        msg = f"{path}: no '<turbine>_data.csv' or '<turbine>_data.parquet' files found"
        raise DataFormatError(msg)
    frames = [f for file in files for f in read_turbine_file(file, channels)]
    ids = [f.turbine_id for f in frames]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        msg = f"{path}: turbine ids appear more than once: {repeated}"
        raise DataFormatError(msg)
    return sorted(frames, key=lambda f: f.turbine_id)


# ---------------------------------------------------------------------------- writing


def runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Inclusive [first, last] index pairs of the runs of True in `mask`."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def intervals_frame(intervals: list[tuple[int, int]]) -> pd.DataFrame:
    """A startTime,endTime table from (start_ms, end_ms) pairs."""
    arr = np.asarray(intervals, dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame({"startTime": format_times(arr[:, 0]), "endTime": format_times(arr[:, 1])})


def write_turbine(
    folder: Path,
    frame: TurbineFrame,
    *,
    failure: list[tuple[int, int]],
    normal: list[tuple[int, int]],
    file_format: str = "csv",
) -> Path:
    """Write one turbine in the WTBI layout: folder/<id>/<id>_data.<fmt> + interval files.

    Returns:
        The data file's path.
    """
    target = folder / frame.turbine_id
    target.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(frame.values, columns=list(frame.channels))
    df.insert(0, TIME_COLUMN, format_times(frame.times_ms))
    if frame.groups is not None:
        df[GROUP_COLUMN] = frame.groups
    data_path = target / f"{frame.turbine_id}_data.{file_format}"
    if file_format == "parquet":
        df.to_parquet(data_path, index=False)
    else:
        df.to_csv(data_path, index=False, float_format="%.5g")
    intervals_frame(failure).to_csv(target / f"{frame.turbine_id}_failureInfo.csv", index=False)
    intervals_frame(normal).to_csv(target / f"{frame.turbine_id}_normalInfo.csv", index=False)
    return data_path
