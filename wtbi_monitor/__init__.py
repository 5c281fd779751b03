"""wtbi-monitor: blade-icing detection for wind turbines from SCADA data.

The package is layered (see docs/architecture.md): core types and configuration at the
bottom, pure computation (preprocessing, models, alarms) above them, offline workflows
(data, training, evaluation) and the streaming service above that, and the command line
on top. An import-layer contract in pyproject.toml keeps it that way.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wtbi-monitor")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
