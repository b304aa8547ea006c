#!/usr/bin/env bash
# The slow half of the reliability suite (issue #8): SIGKILL an evaluation at random points and
# resume it, then fuzz the checkpoint loader, the submission validator and the config gate for a bounded time.
# The fast half runs in CI with the normal test command (`make test`).
#
# Usage: scripts/fault_suite.sh [extra pytest arguments]
# Knobs (environment):
#   ZSBENCH_KILL_POINTS   SIGKILLs to deliver                        (default 40)
#   ZSBENCH_KILL_SEED     seed for the kill times                    (default 1)
#   ZSBENCH_FUZZ_SECONDS  time budget per fuzz target, in seconds    (default 120; 10 targets)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec "$PY" -m pytest -m slow -q \
    tests/test_reliability_killpoints.py tests/test_fuzz_checkpoint.py tests/test_fuzz_submissions.py \
    tests/test_fuzz_configs.py "$@"
