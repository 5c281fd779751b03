#!/usr/bin/env bash
# The main job end to end on the local default: generate a small synthetic farm, train an
# IAE-LSTM-KL bundle on its history, evaluate the model family on both protocols, and score
# the farm with the bundle. Everything runs locally; outputs go to .run/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh

OUT="${WTBI_DEMO_DIR:-.run/demo}"
CONFIG="${WTBI_DEMO_CONFIG:-configs/demo.toml}"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/4 simulate a wind farm with icing episodes"
wtbi-monitor --config "$CONFIG" simulate --out "$OUT/farm"

echo "== 2/4 train IAE-LSTM-KL (soft boundary) on the farm's history"
wtbi-monitor --config "$CONFIG" train --data "$OUT/farm" --member iae_lstm_kl:soft \
  --out "$OUT/models/iae_lstm_kl-soft"

echo "== 3/4 evaluate (time-ordered and paper protocols)"
wtbi-monitor --config "$CONFIG" evaluate --data "$OUT/farm" --out "$OUT/report"

echo "== 4/4 score the farm with the trained bundle"
wtbi-monitor --config "$CONFIG" score --bundle "$OUT/models/iae_lstm_kl-soft" \
  --data "$OUT/farm" --out "$OUT/scores.csv"

echo
echo "Report: $OUT/report/report.md (plots beside it, numbers in results.json)"
