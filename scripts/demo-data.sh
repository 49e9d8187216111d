#!/usr/bin/env bash
# Posts a small, fixed demo data set to the command-service at $1: three
# articles with charges, receipts, a transfer, an issue, a reservation and a
# quality hold. Safe to run twice: what exists already is answered with 409
# and skipped. $DEMO_KEY: an API key with the roles writer, master-data and
# reader (scripts/demo.sh creates one).
set -euo pipefail
url=${1:-http://127.0.0.1:8081}
: "${DEMO_KEY:?an API key (command-service keys create ...)}"

post() {
  local path=$1 body=$2 status
  status=$(curl -sS -o /tmp/erp-demo-response -w '%{http_code}' -X POST "$url$path" \
    -H 'content-type: application/json' -H "authorization: Bearer $DEMO_KEY" -d "$body")
  case "$status" in
    200 | 201 | 409) ;;
    *) echo "POST $path $body answered $status: $(cat /tmp/erp-demo-response)" >&2; exit 1 ;;
  esac
}

article() { post /articles "{\"article\":\"$1\",\"name\":\"$2\",\"category\":\"$3\",\"unit\":{\"code\":\"$4\",\"decimals\":$5},\"reorder_point\":$6}"; }
charge() { post "/articles/$1/charges" "{\"charge\":\"$2\",\"production_date\":\"$3\",\"expiry_date\":$4,\"quality_status\":\"approved\"}"; }
receipt() { post /stock/receipts "{\"article\":\"$1\",\"charge\":\"$2\",\"warehouse\":\"$3\",\"quantity\":$4}"; }

article ART-1000 "Hexagon bolt M8x40" fasteners pcs 0 100
article ART-2000 "Wood glue D3" adhesives kg 3 50000
article ART-3000 "Cable tie 200 mm" fasteners pcs 0 null

charge ART-1000 L-2026-10-C 2026-10-03 null
charge ART-1000 L-2026-11-A 2026-11-02 null
charge ART-2000 L-2026-09-1 2026-09-15 '"2027-09-15"'
charge ART-2000 L-2026-11-2 2026-11-10 '"2027-11-10"'
charge ART-3000 L-2026-08-X 2026-08-20 null

# Receipts only when the demo runs for the first time (the stock would double).
if curl -fsS -H "authorization: Bearer $DEMO_KEY" "${DEMO_QUERY_URL:-http://127.0.0.1:8082}/articles/ART-1000/stock" >/dev/null 2>&1; then
  echo "demo data: already loaded" >&2
  exit 0
fi
receipt ART-1000 L-2026-11-A WH-NORTH 120
receipt ART-1000 L-2026-11-A WH-SOUTH 30
receipt ART-1000 L-2026-10-C WH-NORTH 45
receipt ART-2000 L-2026-09-1 WH-NORTH 500000
receipt ART-2000 L-2026-11-2 WH-SOUTH 250000
receipt ART-3000 L-2026-08-X WH-SOUTH 12
post /stock/transfers '{"article":"ART-1000","charge":"L-2026-11-A","from":"WH-NORTH","to":"WH-SOUTH","quantity":20}'
post /stock/issues '{"article":"ART-1000","charge":"L-2026-10-C","warehouse":"WH-NORTH","quantity":5}'
post /articles/ART-1000/reservations '{"reservation":"SO-1001-1","charge":"L-2026-11-A","warehouse":"WH-SOUTH","quantity":15,"reference":"sales order 1001"}'
post /articles/ART-2000/charges/L-2026-09-1/block '{"reason":"viscosity out of spec"}'
echo "demo data: 3 articles, 5 charges, 6 receipts, a transfer, an issue, a reservation, a quality hold" >&2
