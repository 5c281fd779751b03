"""One frozen, typed settings tree for every command and the daemon.

Sources, highest priority first: keyword arguments (the command line), environment
variables (prefix ``WTBI_``, ``__`` between nesting levels, e.g.
``WTBI_TRAINING__EPOCHS=5``), the TOML file (``configs/default.toml`` unless another is
named), then the defaults below. The tree is built once in the command line and each
component receives only its own section. docs/configuration.md lists every setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from wtbi_monitor.domain import DEFAULT_CHANNELS
from wtbi_monitor.errors import ConfigurationError
from wtbi_monitor.families import ABLATION_MEMBERS, MAIN_MEMBERS, FamilyName

Objective = Literal["hard", "soft"]
Preset = Literal["paper", "small"]
DeviceName = Literal["auto", "cpu", "cuda"]


class _Section(BaseModel):
    """Base of every settings section: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


#: Physically possible values of channels in physical units (preprocessing/validity.py).
#: Readings outside are sensor faults: dropped in batch, dead-lettered in the stream.
DEFAULT_VALID_RANGES: dict[str, tuple[float, float]] = {
    "environment_tmp": (-60.0, 60.0),
    "wind_speed": (0.0, 75.0),
    "pitch_angle": (-20.0, 120.0),
    "pitch1_angle": (-20.0, 120.0),
    "pitch2_angle": (-20.0, 120.0),
    "pitch3_angle": (-20.0, 120.0),
}


class PreprocessingSettings(_Section):
    """How raw readings become windows (model-spec section 1, domain 'Segments and gaps')."""

    channels: tuple[str, ...] = Field(
        default=DEFAULT_CHANNELS,
        description="channel columns, in model input order (26 WTBI channels)",
    )
    smoothing_length: int = Field(default=11, ge=1, description="centred moving-average length")
    window_length: int = Field(default=26, ge=2, description="smoothed samples per window")
    stride: int = Field(default=1, ge=1, description="step between windows in batch mode")
    nominal_interval_s: float = Field(default=7.0, gt=0, description="SCADA sampling interval (s)")
    gap_factor: float = Field(
        default=3.0, gt=1.0, description="a time step above gap_factor x interval starts a segment"
    )
    valid_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_VALID_RANGES),
        description="channel -> [low, high]; readings outside are sensor faults (dropped)",
    )
    derived: tuple[str, ...] = Field(
        default=("power_residual", "pitch_asymmetry"),
        description="physics-aware inputs appended to the channels where their sources exist "
        "(power_residual, pitch_asymmetry; preprocessing/derived.py)",
    )

    @field_validator("smoothing_length")
    @classmethod
    def _odd_smoothing(cls, value: int) -> int:
        if value % 2 == 0:
            msg = f"smoothing_length must be odd for a centred average, got {value}"
            raise ValueError(msg)
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value) or not value:
            msg = "channels must be a non-empty list of distinct names"
            raise ValueError(msg)
        return value

    @field_validator("derived")
    @classmethod
    def _known_derived(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = ("power_residual", "pitch_asymmetry")
        unknown = [v for v in value if v not in known]
        if unknown or len(set(value)) != len(value):
            msg = f"derived channels must be distinct names from {list(known)}, got {value}"
            raise ValueError(msg)
        return value

    @field_validator("valid_ranges")
    @classmethod
    def _ordered_ranges(
        cls, value: dict[str, tuple[float, float]]
    ) -> dict[str, tuple[float, float]]:
        for name, (low, high) in value.items():
            if not low < high:
                msg = f"valid_ranges[{name!r}]: low {low} must be below high {high}"
                raise ValueError(msg)
        return value

    @property
    def max_gap_ms(self) -> int:
        """Largest time step (ms) that does not start a new segment."""
        return round(self.gap_factor * self.nominal_interval_s * 1000)

    @property
    def raw_span(self) -> int:
        """Raw readings covered by one window: smoothing_length + window_length - 1."""
        return self.smoothing_length + self.window_length - 1


class ModelSettings(_Section):
    """Which detector, how big, where it runs, and its loss weights."""

    family: FamilyName = Field(default="iae_lstm_kl", description="model family (docs/models/)")
    objective: Objective = Field(default="soft", description="SVDD boundary: hard or soft")
    preset: Preset = Field(default="paper", description="network size: paper or small")
    device: DeviceName = Field(default="auto", description="auto (CUDA if available), cpu, cuda")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="scoring: bf16 runs the network forward under bf16 autocast (statistics "
        "after it stay float32/float64); fp32 default (docs/models/iae_lstm_kl.md)",
    )
    cuda_graphs: bool = Field(
        default=True,
        description="on CUDA, capture the scoring forward once per fixed batch-size bucket "
        "and replay it (SVDD family)",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads of torch's operators (0: torch's default, one per core); "
        "1 where the broker, the database or other work shares the cores (docs/benchmarks.md)",
    )
    lambda_rec: float = Field(default=1.0, ge=0, description="weight of the reconstruction loss")
    lambda_kl: float = Field(default=0.1, ge=0, description="weight of the KL penalty")
    nu: float = Field(default=0.1, gt=0, lt=1, description="soft-boundary outlier fraction")
    score: Literal["product", "paper"] = Field(
        default="product",
        description="SVDD family: product (standardised distance + reconstruction) or paper",
    )
    physics_weight: float = Field(
        default=1.0,
        ge=0,
        description="weight of the standardised power deficit (power_residual) added to the "
        "asinh of the standardised model score; 0 = the model alone",
    )
    toll_beta: float = Field(default=0.01, ge=0, description="Toll latent-norm weight")
    vae_beta: float = Field(default=1.0, ge=0, description="VAE weight of the KL term")
    memae_items: int = Field(default=100, ge=2, description="MemAE memory size")
    lsa_lambda: float = Field(default=0.1, ge=0, description="LSA weight of the surprisal loss")
    pca_variance: float = Field(
        default=0.95, gt=0, le=1, description="PCA: share of training variance kept"
    )
    iforest_trees: int = Field(default=100, ge=1, description="Isolation Forest size")
    threshold_override: float | None = Field(
        default=None, description="use this threshold instead of the bundle's calibrated one"
    )


class TrainingSettings(_Section):
    """Optimisation, validation split, subsampling and threshold calibration."""

    seed: int = Field(default=0, description="seeds weights, shuffling and subsampling")
    batch_size: int = Field(default=128, ge=2, description="mini-batch size")
    pretrain_epochs: int = Field(default=10, ge=0, description="reconstruction-only epochs first")
    epochs: int = Field(default=50, ge=1, description="maximum joint-training epochs")
    learning_rate: float = Field(default=1e-4, gt=0, description="Adam learning rate")
    weight_decay: float = Field(default=5e-7, ge=0, description="Adam weight decay")
    amsgrad: bool = Field(default=True, description="AMSGrad variant of Adam")
    lr_milestones: tuple[int, ...] = Field(default=(), description="MultiStepLR epochs")
    lr_gamma: float = Field(default=0.1, gt=0, le=1, description="MultiStepLR factor")
    warmup_epochs: int = Field(default=10, ge=0, description="soft boundary: epochs before R moves")
    patience: int = Field(default=8, ge=1, description="early stopping: epochs without progress")
    early_stopping: Literal["auto", "loss"] = Field(
        default="auto",
        description="auto: the model's label-free criterion (validation reconstruction error, "
        "or fault separation without a decoder); loss: the joint loss (the paper)",
    )
    validation_fraction: float = Field(
        default=0.2, gt=0, lt=1, description="share of history used for validation"
    )
    validation_split: Literal["blocks", "tail"] = Field(
        default="blocks",
        description="blocks: every k-th block of the history validates (all seasons); "
        "tail: the newest share (the paper)",
    )
    validation_block_hours: float = Field(
        default=12.0, gt=0, description="length of the interleaved validation blocks"
    )
    max_train_windows: int = Field(
        default=30_000, ge=100, description="random subsample of stride-1 training windows"
    )
    max_validation_windows: int = Field(
        default=20_000, ge=100, description="random subsample for early stopping and calibration"
    )
    min_train_windows: int = Field(default=200, ge=1, description="refuse to train on fewer")
    target_fpr: float = Field(
        default=0.001, gt=0, lt=0.5, description="threshold = (1 - target_fpr) validation quantile"
    )
    scale_margin: float = Field(
        default=1.0,
        ge=0,
        description="scaled inputs are clipped to [-m, 1 + m] (0 = the paper's hard [0, 1] clip)",
    )


class AlarmSettings(_Section):
    """The alarm state machine, in time units (docs/alarms.md, domain 'Alarms')."""

    on_window_s: float = Field(
        default=1800.0, gt=0, description="raise: look-back of the on-delay (IEA Task 19: 30 min)"
    )
    on_fraction: float = Field(
        default=0.5, gt=0, le=1, description="raise when this share of its windows count"
    )
    off_delay_s: float = Field(
        default=3600.0, ge=0, description="clear after this long without evidence"
    )
    min_duration_s: float = Field(
        default=1800.0, ge=0, description="an alarm lasts at least this long"
    )
    rearm_s: float = Field(
        default=7200.0,
        ge=0,
        description="a raise this soon after the last alarm's end continues that alarm",
    )
    clear_tail: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="clear level = (1 - clear_tail) quantile of normal scores (<= threshold)",
    )
    policy: Literal["model", "rule", "either", "both"] = Field(
        default="either",
        description="what raises: the model, the IEA Task 19 rule, either or both",
    )
    per_turbine_thresholds: bool = Field(
        default=True, description="each turbine's threshold from its own validation windows"
    )
    top_channels: int = Field(default=3, ge=1, description="channels named in an alarm")
    temperature_gate_c: float | None = Field(
        default=3.0, description="no raising above this ambient temperature (None: off)"
    )
    stopped_power_share: float | None = Field(
        default=0.01,
        description="no raising while power is below this share of the training maximum...",
    )
    stopped_wind_ms: float = Field(
        default=3.5, description="...and wind below this (stopped for lack of wind, not ice)"
    )
    flag_channels: tuple[str, ...] = Field(
        default=("curtailment_flag", "stop_flag"),
        description="no raising while any of these channels (where present) is set",
    )
    temperature_channel: str = Field(default="environment_tmp", description="gate input")
    power_channel: str = Field(default="power", description="gate input")
    wind_channel: str = Field(default="wind_speed", description="gate input")
    drift_horizon_s: float = Field(
        default=7 * 86400.0, gt=0, description="averaging time of the drift signal"
    )
    drift_factor: float = Field(
        default=10.0, gt=1, description="drift when above-threshold rate > factor x target"
    )
    min_turbine_windows: int = Field(
        default=2000, ge=10, description="validation windows needed for a turbine's own levels"
    )


class SimulationSettings(_Section):
    """The synthetic farm written by `wtbi-monitor simulate` (docs/realism.md).

    Unset fields take the profile's value: `wtbi` is the 26-channel WTBI shape at ~7 s, a
    winter run at a cold site; `scada10` is real-shaped 10-minute SCADA with 7 channels and
    a 2 MW class turbine over two years of a mild climate.
    """

    profile: Literal["wtbi", "scada10"] = Field(
        default="wtbi", description="data shape: wtbi (26 channels, 7 s) or scada10 (7, 10 min)"
    )
    turbines: int = Field(default=4, ge=1, le=999, description="turbines in the farm")
    days: float | None = Field(
        default=None, gt=0, description="length of the record (profile: 28 or 730)"
    )
    interval_s: float | None = Field(
        default=None, gt=0, description="sampling interval (profile: 7 s or 600 s)"
    )
    seed: int = Field(default=7, description="the farm is deterministic per seed")
    start: str | None = Field(
        default=None, description="first timestamp, UTC (profile: 2015-11-01 or 2019-10-01)"
    )
    icing_frequency: float = Field(
        default=1.0, gt=0, description="scales how often icing weather occurs (1 = calibrated)"
    )
    temperature_offset_c: float = Field(
        default=0.0, description="shifts the whole climate (negative: a colder site)"
    )
    anemometer_icing_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="share of episodes that ice the anemometer, not the blades",
    )
    stop_on_ice_probability: float = Field(
        default=0.45, ge=0, le=1, description="share of blade-ice episodes the ice detector stops"
    )
    missing_sample_fraction: float | None = Field(
        default=None, ge=0, lt=0.5, description="single readings dropped (profile: 1 % or 0)"
    )
    gaps_per_turbine_week: float | None = Field(
        default=None,
        ge=0,
        description="recording outages, log-normal, median 1.5 h, new group (profile: 0.4, 0.18)",
    )
    stops_per_turbine_week: float = Field(
        default=0.4, ge=0, description="maintenance and fault stops (median 4 h)"
    )
    curtailment_per_turbine_week: float = Field(
        default=1.0, ge=0, description="power caps at 20-70 % of rated (median 4 h)"
    )
    sensor_faults_per_turbine_week: float = Field(
        default=0.5, ge=0, description="frozen sensors, -273 C, pitch outliers, all-zero rows"
    )
    rated_power_kw: float | None = Field(
        default=None, gt=0, description="turbine rating (profile: 1500 or 2000 kW)"
    )
    file_format: Literal["csv", "parquet"] = Field(default="csv", description="data file format")


class EvaluationSettings(_Section):
    """Protocols of docs/domain 'Evaluation protocols'."""

    families: tuple[str, ...] = Field(
        default=("iae_lstm_kl:soft", "iae_lstm_kl:hard"),
        description="members evaluated when none are named (family[:objective][+ablation])",
    )
    train_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="time-ordered: oldest share of the record for training"
    )
    test_start: str | None = Field(
        default=None,
        description="time-ordered: first test time (ISO, UTC); overrides the fractions",
    )
    validation_start: str | None = Field(
        default=None,
        description="time-ordered, tail validation: first validation time (ISO, UTC)",
    )
    validation_fraction: float = Field(
        default=0.15, gt=0, lt=1, description="time-ordered: next share, for validation"
    )
    paper_test_fraction: float = Field(
        default=0.3, gt=0, lt=1, description="paper protocol: share of normal windows tested"
    )
    max_test_windows: int = Field(
        default=60_000, ge=100, description="paper protocol: random subsample of test windows"
    )
    timeline_turbines: int = Field(default=2, ge=0, description="turbines drawn in timelines")
    single_channels: tuple[str, ...] = Field(
        default=("environment_tmp", "power", "power_residual", "wind_speed", "acc_x"),
        description="channels of the single-channel oracle detectors in the report",
    )

    @model_validator(mode="after")
    def _fractions(self) -> Self:
        if self.train_fraction + self.validation_fraction >= 1:
            msg = "evaluation.train_fraction + validation_fraction must leave a test part"
            raise ValueError(msg)
        return self


class BenchmarkSettings(_Section):
    """`wtbi-monitor benchmark`: the whole family over several seeds (docs/results.md)."""

    title: str = Field(default="the wtbi profile (7 s, 26 channels)", description="page title")
    seeds: tuple[int, ...] = Field(
        default=(0, 1, 2), description="training seeds per member (time-ordered protocol)"
    )
    seed_members: tuple[str, ...] = Field(
        default=(),
        description="if set, only these members run every seed; the others the first only",
    )
    paper_seeds: tuple[int, ...] = Field(
        default=(0,), description="training seeds of the paper protocol (leaky, for Table III)"
    )
    paper_members: tuple[str, ...] = Field(
        default=(), description="members run on the paper protocol (empty: all of `members`)"
    )
    budgets: dict[str, dict[str, int | float]] = Field(
        default_factory=dict,
        description="member -> training settings for its fits (e.g. more windows and epochs)",
    )
    members: tuple[str, ...] = Field(
        default=MAIN_MEMBERS,
        description="members of the main tables (paper Table III and more)",
    )
    ablations: tuple[str, ...] = Field(
        default=ABLATION_MEMBERS, description="IAE-LSTM-KL ablations (paper Tables V and VII)"
    )
    ablation_seeds: tuple[int, ...] = Field(
        default=(0, 1, 2), description="training seeds of the ablation members"
    )
    contamination_levels: tuple[float, ...] = Field(
        default=(0.0, 0.05, 0.10, 0.15, 0.20, 0.25),
        description="shares of icing windows mixed into training (paper Fig. 5)",
    )
    contamination_members: tuple[str, ...] = Field(
        default=("iae_lstm_kl:soft", "deep_svdd:soft", "cae"),
        description="members of the contamination study",
    )
    contamination_seeds: tuple[int, ...] = Field(
        default=(0, 1), description="seeds of the contamination study"
    )
    tune_members: tuple[str, ...] = Field(
        default=("iae_lstm_kl:soft",), description="members also run with searched settings"
    )
    tune_budget: int = Field(default=6, ge=1, description="settings tried per tuned member")
    test_stride: int = Field(
        default=4,
        ge=1,
        description="time-ordered: score every n-th test window (alarm counts scaled to match)",
    )
    timeline_members: tuple[str, ...] = Field(
        default=("iae_lstm_kl:soft", "cae", "power_curve_rule"),
        description="members whose score timelines are plotted",
    )
    attribution_windows: int = Field(
        default=2000, ge=10, description="flagged icing windows sampled for the hit rate"
    )


class KafkaSettings(_Section):
    """The broker, topics, consumer group and security (passed through to aiokafka)."""

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="host:port[,host:port]")
    input_topic: str = Field(default="wtbi.readings", description="readings, keyed by turbine id")
    alert_topic: str = Field(
        default="wtbi.alarms", description="alarm events out, keyed by turbine"
    )
    dead_letter_topic: str = Field(default="wtbi.dead-letter", description="rejected records")
    state_topic: str = Field(
        default="wtbi.state", description="compacted per-turbine state snapshots (recovery)"
    )
    group_id: str = Field(default="wtbi-monitor", description="consumer group")
    client_id: str = Field(default="wtbi-monitor", description="client id prefix")
    create_topics: bool = Field(default=True, description="create missing topics at start-up")
    input_partitions: int = Field(default=4, ge=1, description="partitions when creating input")
    replication_factor: int = Field(default=1, ge=1, description="when creating topics")
    session_timeout_ms: int = Field(default=10_000, ge=1000, description="group session timeout")
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="group heartbeat")
    max_poll_interval_ms: int = Field(default=300_000, ge=1000, description="see pitfalls")
    fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="longest the broker may hold a fetch without new data; a broker that "
        "does not answer as soon as records arrive adds up to this much latency "
        "(aiokafka's default is 500; lower means more empty fetches: docs/benchmarks.md)",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a new group starts"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = Field(default=None, description="never logged")
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for SSL")
    ssl_certfile: Path | None = Field(default=None, description="client certificate")
    ssl_keyfile: Path | None = Field(default=None, description="client key")
    max_request_bytes: int = Field(
        default=1_048_576,
        ge=16_384,
        description="producer request limit; larger dead letters are sent as bounded summaries",
    )


class InfluxSettings(_Section):
    """The InfluxDB-protocol database (influxdb-client v2 write API)."""

    url: str = Field(default="http://127.0.0.1:8086", description="base URL")
    token: SecretStr = Field(default=SecretStr(""), description="API token, never logged")
    org: str = Field(default="wtbi", description="organisation")
    bucket: str = Field(default="wtbi", description="bucket")
    score_measurement: str = Field(default="wtbi_score", description="one point per window")
    alarm_measurement: str = Field(default="wtbi_alarm", description="one point per transition")
    batch_lines: int = Field(default=5000, ge=1, description="lines per write request")
    timeout_s: float = Field(default=10.0, gt=0, description="per request")
    gzip: bool = Field(default=True, description="compress requests")


class ServiceSettings(_Section):
    """The daemon: batching, commits, retries, health, limits."""

    bundle: Path = Field(default=Path("models/iae_lstm_kl-soft"), description="model bundle")
    max_batch_records: int = Field(default=2000, ge=1, description="records per micro-batch")
    max_wait_ms: int = Field(default=200, ge=1, description="micro-batch deadline")
    score_batch_size: int = Field(default=512, ge=1, description="windows per inference call")
    commit_interval_s: float = Field(default=2.0, gt=0, description="snapshot + commit period")
    retry_initial_s: float = Field(default=0.2, gt=0, description="first sink retry delay")
    retry_max_s: float = Field(default=10.0, gt=0, description="longest sink retry delay")
    replay_give_up_s: float = Field(
        default=300.0,
        gt=0,
        description="`replay --to-sinks`: exit with an error when a batch cannot be delivered "
        "for this long (the daemon retries for ever instead)",
    )
    max_record_bytes: int = Field(
        default=16_384, ge=256, description="larger records dead-lettered"
    )
    max_future_s: float = Field(default=300.0, ge=0, description="records further ahead rejected")
    max_turbines: int = Field(
        default=10_000,
        ge=1,
        description="turbines tracked at once; readings of further ids are dead-lettered",
    )
    commit_timeout_s: float = Field(
        default=10.0, gt=0, description="an offset commit or snapshot save taking longer fails"
    )
    broker_check_interval_s: float = Field(
        default=5.0, gt=0, description="how often the watchdog asks the broker for its topics"
    )
    log_repeat_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="a library's repeated log line is printed once per interval (and counted)",
    )
    http_host: str = Field(default="127.0.0.1", description="metrics/health listen address")
    http_port: int = Field(default=9108, ge=0, le=65535, description="0 = pick a free port")
    watchdog_unready_s: float = Field(
        default=30.0, gt=0, description="no progress while lagging: mark unready"
    )
    watchdog_restart_s: float = Field(
        default=120.0, gt=0, description="no progress while lagging: recreate the consumer"
    )
    shutdown_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="SIGTERM to exit, at most (drain, final commit, close; then a hard exit)",
    )
    gil_switch_interval_ms: float = Field(
        default=0.2,
        gt=0,
        description="Python thread switch interval while serving (docs/benchmarks.md)",
    )


class LoggingSettings(_Section):
    """structlog output."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="minimum level"
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json, console, or auto (console on a terminal)"
    )


class Settings(BaseSettings):
    """The whole configuration tree."""

    model_config = SettingsConfigDict(
        env_prefix="WTBI_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    preprocessing: PreprocessingSettings = PreprocessingSettings()
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()
    alarm: AlarmSettings = AlarmSettings()
    simulation: SimulationSettings = SimulationSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    benchmark: BenchmarkSettings = BenchmarkSettings()
    kafka: KafkaSettings = KafkaSettings()
    influx: InfluxSettings = InfluxSettings()
    service: ServiceSettings = ServiceSettings()
    logging: LoggingSettings = LoggingSettings()
    models_dir: Path = Field(default=Path("models"), description="where train saves bundles")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments beat environment, environment beats the TOML file."""
        del dotenv_settings, file_secret_settings  # not used: one file, plus the environment
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


DEFAULT_CONFIG = Path("configs/default.toml")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings tree from a TOML file, the environment and explicit overrides.

    Args:
        config_file: TOML file to read; `configs/default.toml` when it exists and none is
            given; no file at all otherwise (defaults and environment only).
        **overrides: section dictionaries that take precedence over everything else.

    Returns:
        The frozen settings tree.
    """
    path = config_file
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None and not path.is_file():
        msg = f"configuration file not found: {path}"
        raise ConfigurationError(msg)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    return _FromFile(**overrides)
