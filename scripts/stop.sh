#!/usr/bin/env bash
# Stops the services started by scripts/demo.sh, then the infrastructure these
# scripts started. Processes are found by their pid files only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for name in notifier worker query-service projector command-service; do
  stop_bg "$name"
done
"$REPO_ROOT/scripts/infra.sh" down
