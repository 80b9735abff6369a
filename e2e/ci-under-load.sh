#!/usr/bin/env bash
# The test command (.ci/run) several times in a row while `stress` keeps every core busy:
# the evidence that no test needs a quiet machine. The runs share target/, so only the first
# builds; every run executes every test.
#   e2e/ci-under-load.sh [RUNS]     # default 3; logs in target/ci-under-load/
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
runs=${1:-3}
if ! command -v stress >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends stress >/dev/null
fi
logs=target/ci-under-load
mkdir -p "$logs"
# stress and its workers run in a process group of their own with a watcher that ends the
# group once this script is gone: a trap cannot run when the script is killed with SIGKILL
# (a CI timeout), and stress's workers would then spin on for ever.
setsid bash -c 'stress --cpu "$1" & while kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -- -$$' \
  load "$(nproc)" "$$" >/dev/null 2>&1 &
stress_pid=$!
trap 'kill -- -"$stress_pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  rc=0
  bash .ci/run >"$logs/run-$i.log" 2>&1 || rc=$?
  passed=$(grep -o '[0-9]* passed' "$logs/run-$i.log" | awk '{s+=$1} END {print s+0}')
  failed=$(grep -o '[0-9]* failed' "$logs/run-$i.log" | awk '{s+=$1} END {print s+0}')
  echo "run $i: rc=$rc, $(($(date +%s) - start)) s, $passed passed, $failed failed, load $(cut -d' ' -f1-3 /proc/loadavg)"
  [ "$rc" -eq 0 ] || exit "$rc"
done
