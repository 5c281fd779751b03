"""The WTBI reader: formats it accepts and the errors it gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wtbi_monitor.data.wtbi import read_farm
from wtbi_monitor.domain import DEFAULT_CHANNELS, Label
from wtbi_monitor.errors import DataFormatError

CH = DEFAULT_CHANNELS


def table(n: int = 6, start: str = "2015-11-01 00:00:00") -> pd.DataFrame:
    times = pd.date_range(start, periods=n, freq="7s").strftime("%Y-%m-%d %H:%M:%S")
    df = pd.DataFrame(np.arange(n * len(CH), dtype=float).reshape(n, len(CH)), columns=list(CH))
    df.insert(0, "time", times)
    df["group"] = 1
    return df


def write(folder: Path, tid: str, df: pd.DataFrame, failure=None, normal=None) -> Path:
    d = folder / tid
    d.mkdir(parents=True, exist_ok=True)
    df.to_csv(d / f"{tid}_data.csv", index=False)
    for kind, rows in (("failureInfo", failure), ("normalInfo", normal)):
        if rows is not None:
            pd.DataFrame(rows, columns=["startTime", "endTime"]).to_csv(
                d / f"{tid}_{kind}.csv", index=False
            )
    return d


def test_interval_files_label_rows_and_leave_the_rest_unknown(tmp_path):
    write(
        tmp_path,
        "15",
        table(6),
        failure=[("2015-11-01 00:00:14", "2015-11-01 00:00:21")],
        normal=[("2015-11-01 00:00:00", "2015-11-01 00:00:07")],
    )
    (frame,) = read_farm(tmp_path, CH)
    assert frame.turbine_id == "15"
    assert frame.labels.tolist() == [0, 0, 1, 1, -1, -1]
    assert frame.values.shape == (6, 26)  # noqa: PD011 - a numpy array field, not pandas
    assert frame.times_ms[1] - frame.times_ms[0] == 7000


def test_label_column_and_many_turbines_in_one_parquet_file(tmp_path):
    a, b = table(4), table(3)
    a["turbine_id"], b["turbine_id"] = "A", "B"
    a["label"] = [0, 1, None, 0]
    b["label"] = [None, 0, 0]
    path = tmp_path / "farm.parquet"
    pd.concat([a, b]).to_parquet(path)
    frames = read_farm(path, CH)
    assert [f.turbine_id for f in frames] == ["A", "B"]
    assert frames[0].labels.tolist() == [Label.NORMAL, Label.ICING, Label.UNKNOWN, Label.NORMAL]


def test_rows_with_missing_values_are_dropped_and_counted(tmp_path):
    df = table(5)
    df.loc[2, "power"] = None
    write(tmp_path, "01", df)
    (frame,) = read_farm(tmp_path, CH)
    assert len(frame) == 4
    assert frame.dropped_rows == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda df: df.drop(columns=["power", "acc_x"]),
            r"missing column\(s\) \['power', 'acc_x'\]",
        ),
        (lambda df: df.assign(rotor_temp=1.0), r"unexpected column\(s\) \['rotor_temp'\]"),
        (
            lambda df: df.assign(time=df["time"].where(df.index != 3, "yesterday")),
            r"unparseable time 'yesterday' at row 4",
        ),
        (lambda df: df.iloc[[0, 2, 1, 3]], "decreasing timestamp at row 2"),
        (
            lambda df: df.assign(power=df["power"].astype(object).where(df.index != 1, "fault")),
            r"non-numeric value 'fault' in column 'power' at row 2",
        ),
        (lambda df: df.assign(label=[0, 1, 2, 0, 0, 0]), "label must be 1, 0 or empty"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, mutate, message):
    write(tmp_path, "07", mutate(table(6)).reset_index(drop=True))
    with pytest.raises(DataFormatError, match=message):
        read_farm(tmp_path, CH)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        read_farm(tmp_path / "nope", CH)
    with pytest.raises(DataFormatError, match=r"no '<turbine>_data\.csv'"):
        read_farm(tmp_path, CH)
