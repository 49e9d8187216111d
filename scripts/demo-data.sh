#!/usr/bin/env bash
# Posts a small, fixed demo data set to the command-service at $1.
set -euo pipefail
url=${1:-http://127.0.0.1:8081}

post() {
  local path=$1 body=$2 status
  status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$url$path" \
    -H 'content-type: application/json' -H 'x-actor: demo-data' -d "$body")
  [ "$status" = 201 ] || { echo "POST $path $body answered $status" >&2; exit 1; }
}

receipt() {
  post /stock/receipts "{\"article\":\"$1\",\"charge\":\"$2\",\"warehouse\":\"$3\",\"quantity\":$4}"
}

receipt ART-1000 L-2026-11-A WH-NORTH 120
receipt ART-1000 L-2026-11-A WH-SOUTH 30
receipt ART-1000 L-2026-10-C WH-NORTH 45
receipt ART-2000 L-2026-09-1 WH-NORTH 500
receipt ART-2000 L-2026-11-2 WH-SOUTH 250
receipt ART-3000 L-2026-08-X WH-SOUTH 12
echo "demo data: 6 receipts for ART-1000, ART-2000, ART-3000" >&2
