# What the tests use besides the servers: Prometheus's promtool, and a
# Python with the test tools from PyPI. Sourced by scripts/infra.sh.

# promtool (checks of deploy/prometheus) and prometheus (the scrape test) come
# with Debian's prometheus package, amtool (checks of deploy/alertmanager) with
# prometheus-alertmanager; their services are not started.
ensure_prometheus() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v amtool >/dev/null && return
  apt_install prometheus prometheus-alertmanager
}

# A Python with the test tools from PyPI, kept in $CACHE_DIR/python:
# confluent-kafka for the test of the analysts' example
# (docs/examples/read_events.py), schemathesis for the API contract test
# (pinned: a new release brings new checks, to be adopted on purpose),
# standardwebhooks to verify the webhooks' signatures independently
# (docs/examples/webhook_receiver.py).
SCHEMATHESIS_VERSION="4.32.5"
ensure_python_client() {
  local venv="$CACHE_DIR/python"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import confluent_kafka, standardwebhooks' 2>/dev/null \
    && [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  if ! python3 -m venv "$venv" >&2 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv" >&2
  fi
  log "installing confluent-kafka, standardwebhooks and schemathesis $SCHEMATHESIS_VERSION into $venv"
  "$venv/bin/python" -m pip install -q confluent-kafka standardwebhooks "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
    || die "installing the Python test tools failed"
}

# matplotlib, for the load tests' plots (loadtest/report.py), into the same
# venv; only scripts/loadtest.sh asks for it.
ensure_python_plots() {
  local venv="$CACHE_DIR/python"
  [ -x "$venv/bin/python" ] || ensure_python_client
  "$venv/bin/python" -c 'import matplotlib' 2>/dev/null && return
  log "installing matplotlib into $venv"
  "$venv/bin/python" -m pip install -q matplotlib >&2 || die "installing matplotlib failed"
}
