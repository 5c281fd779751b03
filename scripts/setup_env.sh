#!/usr/bin/env bash
# Create .venv and install the package with pinned versions (sourced by the other scripts).
#
# torch is pinned to 2.13.0 through requirements/constraints.txt, which gives a CPU-only
# machine the local CPU wheel instead of a multi-GB CUDA build. The install is skipped when
# neither pyproject.toml nor the constraints changed since the last successful one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WTBI_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "wtbi-monitor needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
# The InfluxDB-protocol database for the demo and the integration tests (docs/operations.md, "Local servers"):
# VictoriaMetrics from Debian. The Kafka-protocol broker (Tansu) comes with a pip package.
if ! command -v victoria-metrics >/dev/null 2>&1; then
  echo "installing victoria-metrics from Debian (about 10 s)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq >&2 || echo "apt-get update failed" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      victoria-metrics >&2 || echo "could not install victoria-metrics" >&2
  fi
  if ! command -v victoria-metrics >/dev/null 2>&1; then
    echo "victoria-metrics is missing: the demo and the integration tests need it" >&2
    echo "(apt-get install victoria-metrics, or put a victoria-metrics binary on PATH)" >&2
    exit 1
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.wtbi-installed"
wanted="$(cat "$ROOT/pyproject.toml" "$ROOT/requirements/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "installing wtbi-monitor and its pinned dependencies into $VENV (about 2 minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$ROOT/requirements/constraints.txt" -e "$ROOT[dev,servers]"
  echo "$wanted" > "$stamp"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
