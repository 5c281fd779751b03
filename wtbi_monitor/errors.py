"""The project's exception hierarchy.

Every error the package raises on purpose derives from `WtbiError`, so the command line
and the service loop can tell expected failures (bad input, a refused bundle) from bugs.
"""

import enum


class WtbiError(Exception):
    """Base class of all deliberate errors of wtbi-monitor."""


class ConfigurationError(WtbiError):
    """A setting is missing, contradictory or out of range."""


class DataFormatError(WtbiError):
    """Input data does not follow the documented format (columns, times, values)."""


class NotFittedError(WtbiError):
    """A detector or scaler was used before it was fitted."""


class BundleError(WtbiError):
    """A model bundle cannot be saved or loaded."""


class BundleIntegrityError(BundleError):
    """A bundle's weights do not match the content hash recorded in its manifest."""


class BundleMismatchError(BundleError):
    """A bundle was trained for other channels or other preprocessing than configured."""


class TrainingError(WtbiError):
    """Training cannot proceed (too little normal data, diverging loss, ...)."""


class Reason(enum.StrEnum):
    """Machine-readable reasons for rejecting a streamed record (dead-letter headers)."""

    TOO_LARGE = "too_large"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_SCHEMA = "bad_schema"
    BAD_TURBINE_ID = "bad_turbine_id"
    KEY_MISMATCH = "key_mismatch"
    BAD_TIME = "bad_time"
    FUTURE_TIME = "future_time"
    MISSING_CHANNELS = "missing_channels"
    UNKNOWN_CHANNELS = "unknown_channels"
    WRONG_LENGTH = "wrong_length"
    BAD_VALUE_TYPE = "bad_value_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_GROUP = "bad_group"
    DUPLICATE_TIME = "duplicate_time"
    OUT_OF_ORDER = "out_of_order"
    SINK_REJECTED = "sink_rejected"
    TOO_MANY_TURBINES = "too_many_turbines"


class RecordError(WtbiError):
    """A streamed record is invalid; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SinkError(WtbiError):
    """An output sink failed to acknowledge a write."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
        refused: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.refused = refused  # permanent: how many items were refused (None: all)


class SourceUnavailableError(WtbiError):
    """The input has no live consumer (its last restart failed); the watchdog retries."""
