#!/usr/bin/env bash
# kstiff analyze as two cooperating worker processes on this machine (TF_CONFIG on loopback ports).
# Each worker forms about half of the Gram block pairs; TensorFlow's collectives combine the sums;
# the chief (worker 0) prints the result and writes --out, the other worker writes nothing.
#
#   examples/multiworker_analyze.sh MODEL.keras [more kstiff analyze options]
set -euo pipefail
model="$1"; shift
ports='["127.0.0.1:23456", "127.0.0.1:23457"]'
for index in 1 0; do
  TF_CONFIG="{\"cluster\": {\"worker\": $ports}, \"task\": {\"type\": \"worker\", \"index\": $index}}" \
    kstiff analyze "$model" --data digits --out analyze_run.h5 --overwrite "$@" &
done
wait
