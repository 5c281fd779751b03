"""`FitConfig` is a subset of `TrainingSettings`: same names, same defaults, same values."""

from __future__ import annotations

from dataclasses import fields

from wtbi_monitor.config import TrainingSettings
from wtbi_monitor.model.trainer import FitConfig


def test_fit_config_fields_are_training_settings_with_their_defaults() -> None:
    defaults = TrainingSettings()
    for f in fields(FitConfig):
        assert f.name in TrainingSettings.model_fields, (
            f"FitConfig.{f.name} is not a field of config.TrainingSettings"
        )
        assert getattr(FitConfig(), f.name) == getattr(defaults, f.name), f.name


def test_fit_config_from_settings_takes_every_field() -> None:
    settings = TrainingSettings(
        batch_size=32,
        pretrain_epochs=1,
        epochs=2,
        learning_rate=3e-3,
        weight_decay=0.0,
        amsgrad=False,
        lr_milestones=(1,),
        lr_gamma=0.5,
        warmup_epochs=0,
        patience=2,
        seed=7,
        early_stopping="loss",
    )
    config = FitConfig.from_settings(settings)
    assert {f.name: getattr(config, f.name) for f in fields(FitConfig)} == {
        f.name: getattr(settings, f.name) for f in fields(FitConfig)
    }
    assert config.seed == 7
    assert config.early_stopping == "loss"
