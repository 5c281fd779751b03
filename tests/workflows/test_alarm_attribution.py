"""Alarms name the channels the icing changed (issue: alarms an operator can act on).

On the generator's blade-icing episodes the simulator changes power, pitch and rotor speed
(each episode lists its `affected_channels`; the derived power residual follows power).
A detector trained on the earlier normal rows must name one of them among the top three
channels of most of the alarms it raises during such an episode, through the product's one
ranking (alarms.rank_channels: excess reconstruction error over the normal median). PCA
stands for the decoding members here because it fits in seconds; docs/results.md reports
the same hit rate for every member, IAE-LSTM-KL included.
"""

from __future__ import annotations

import pytest

from wtbi_monitor.config import Settings
from wtbi_monitor.data.synthetic import FarmSimulator
from wtbi_monitor.evaluation.protocols import evaluate_time_ordered, time_ordered_case
from wtbi_monitor.preprocessing.derived import SOURCES as DERIVED_SOURCES

pytestmark = pytest.mark.slow


def test_alarms_during_blade_icing_name_the_changed_channels_first():
    settings = Settings(
        simulation={
            "turbines": 2,
            "days": 4.0,
            "seed": 16,
            "start": "2015-12-10T00:00:00",
            "icing_frequency": 2.0,
        },
        model={"preset": "small"},
        training={
            "max_train_windows": 10000,
            "max_validation_windows": 3000,
            "pretrain_epochs": 1,
            "epochs": 4,
            "warmup_epochs": 1,
            "batch_size": 128,
        },
    )
    frames, episodes = FarmSimulator(settings.simulation).generate()
    case = time_ordered_case(frames, settings, stride=2)
    result = evaluate_time_ordered(frames, ["pca"], settings, case=case)
    blade = [e for e in episodes if e.kind == "blade"]
    named, during = 0, 0
    for alarm in result.members[0].alarms:
        match = [
            e
            for e in blade
            if e.turbine_id == alarm.turbine_id and e.start_ms <= alarm.raised_ms <= e.end_ms
        ]
        if not match:
            continue
        affected = set().union(*(e.affected_channels for e in match))
        affected |= {d for d, sources in DERIVED_SOURCES.items() if affected & set(sources)}
        during += 1
        named += any(name in affected for name, _ in alarm.top_channels[:3])
    assert during >= 1, "no alarm was raised during a blade-icing episode"
    assert named / during > 0.5
