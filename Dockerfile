# wtbi-monitor: the streaming daemon (and the rest of the CLI) in a container.
#
#   CPU (default):  docker build -t wtbi-monitor .
#   CUDA:           docker build -t wtbi-monitor:cuda --build-arg TORCH_INDEX=cu128 .
#
#   docker run --rm -p 9108:9108 \
#     -v "$PWD/configs/site.toml:/etc/wtbi-monitor/config.toml:ro" \
#     -v "$PWD/models:/models:ro" \
#     -e WTBI_KAFKA__BOOTSTRAP_SERVERS=broker:9092 -e WTBI_INFLUX__URL=http://influx:8086 \
#     -e WTBI_INFLUX__TOKEN=... -e WTBI_SERVICE__BUNDLE=/models/iae_lstm_kl-soft \
#     wtbi-monitor            # add --gpus all for the CUDA image
#
# Secrets come in as environment variables (WTBI_INFLUX__TOKEN, WTBI_KAFKA__SASL_PASSWORD),
# never in the image. docs/operations.md has the rest.
FROM python:3.11-slim AS base

# "cpu" (small wheels) or a CUDA tag of the PyTorch wheel index, e.g. "cu128".
ARG TORCH_INDEX=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements/constraints.txt requirements/constraints.txt
# torch first, from the chosen wheel index (a cached layer while only the code changes);
# "torch==2.13.0" in the constraints also matches the CUDA build's "2.13.0+cu128".
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
      "$(grep '^torch==' requirements/constraints.txt)"

COPY pyproject.toml README.md ./
COPY wtbi_monitor wtbi_monitor
COPY configs /etc/wtbi-monitor/defaults
RUN pip install -c requirements/constraints.txt . \
 && cp /etc/wtbi-monitor/defaults/default.toml /etc/wtbi-monitor/config.toml \
 && useradd --system --uid 10001 --home-dir /var/lib/wtbi-monitor --create-home wtbi \
 && mkdir -p /models && chown wtbi /models

USER wtbi
WORKDIR /var/lib/wtbi-monitor
# In a container the metrics/health endpoint must be reachable from outside it.
ENV WTBI_SERVICE__HTTP_HOST=0.0.0.0 \
    WTBI_SERVICE__HTTP_PORT=9108 \
    WTBI_SERVICE__BUNDLE=/models/iae_lstm_kl-soft \
    WTBI_LOGGING__FORMAT=json \
    MPLCONFIGDIR=/tmp/matplotlib
VOLUME ["/models"]
EXPOSE 9108

# Liveness (/healthz/live): the main loop turns. Not readiness: a daemon that waits out a
# database outage, or holds no partition, is unready but healthy, and restarting it would
# not help (docs/operations.md). Orchestrators route on /healthz/ready.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz/live', timeout=4).status == 200 else 1)"

ENTRYPOINT ["wtbi-monitor", "--config", "/etc/wtbi-monitor/config.toml"]
CMD ["serve"]
