#!/usr/bin/env bash
# The main job end to end on the local default (README): start a real Kafka-protocol broker
# and a real InfluxDB-protocol database on loopback, generate a farm's history and train a
# small model bundle on it, start the daemon, stream a later day and a half of the
# farm (with icing) through Kafka, and print the alarms read back from the database and the
# alert topic. Everything is stopped at the end, also on failure or Ctrl-C.
# Everything lands in .run/demo/ (WTBI_DEMO_DIR). About 4 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh

OUT="${WTBI_DEMO_DIR:-.run/demo}"
CONFIG="${WTBI_DEMO_CONFIG:-configs/demo.toml}"
# The product default, IAE-LSTM-KL (soft objective, product score with physics fusion);
# any other member with WTBI_DEMO_MEMBER=cae (for example).
MEMBER="${WTBI_DEMO_MEMBER:-iae_lstm_kl:soft}"
BUNDLE="$OUT/models/${MEMBER/:/-}"
export WTBI_LOGGING__LEVEL=warning
DAEMON_PID=""
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill -TERM "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  python -m wtbi_devtools.localenv down --dir "$OUT/servers" || true
}
# Stop leftovers of an earlier run before wiping its folder.
[ -f "$OUT/servers/pids" ] && python -m wtbi_devtools.localenv down --dir "$OUT/servers"
rm -rf "$OUT"
mkdir -p "$OUT"
trap cleanup EXIT

echo "== 1/6 start the local broker (Tansu) and database (VictoriaMetrics)"
python -m wtbi_devtools.localenv up --dir "$OUT/servers" > /dev/null
# shellcheck disable=SC1091
source "$OUT/servers/env"
echo "   kafka $WTBI_KAFKA__BOOTSTRAP_SERVERS, database $WTBI_INFLUX__URL"

echo "== 2/6 simulate six days of history for two turbines"
wtbi-monitor --config "$CONFIG" simulate --out "$OUT/history"

echo "== 3/6 train $MEMBER (small preset) on the history's normal rows"
wtbi-monitor --config "$CONFIG" train --data "$OUT/history" --member "$MEMBER" --out "$BUNDLE"

echo "== 4/6 start the daemon (wtbi-monitor serve)"
HTTP_PORT="$(python -c 'from wtbi_devtools.localenv import free_port; print(free_port())')"
wtbi-monitor --config "$CONFIG" --log-format json serve \
  --bundle "$BUNDLE" --http-port "$HTTP_PORT" > "$OUT/daemon.log" 2>&1 &
DAEMON_PID=$!
echo "   pid $DAEMON_PID, metrics http://127.0.0.1:$HTTP_PORT/metrics, log $OUT/daemon.log"

echo "== 5/6 stream the next day and a half (with an icing episode) into Kafka"
WTBI_SIMULATION__START=2015-12-16T00:00:00 WTBI_SIMULATION__DAYS=1.5 WTBI_SIMULATION__SEED=9 \
  wtbi-monitor --config "$CONFIG" simulate --out "$OUT/live" > /dev/null
PRODUCED="$(wtbi-monitor --config "$CONFIG" produce --data "$OUT/live" --speedup 0)"
echo "   $PRODUCED"
RECORDS="$(echo "$PRODUCED" | sed -E 's/^produced ([0-9,]+) .*/\1/; s/,//g')"
python scripts/demo_check.py wait --metrics "http://127.0.0.1:$HTTP_PORT" --records "$RECORDS"

echo "== 6/6 alarms, read back from the database and the alert topic"
python scripts/demo_check.py --config "$CONFIG" show --episodes "$OUT/live/episodes.json"
echo
echo "Daemon log: $OUT/daemon.log. Stopping the daemon and the servers."
