# Two commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test check bench bench-deps chaos run clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP) system-deps
	$(VENV)/bin/rheostat demo

# Debian packages the tests drive for real: Prometheus (metric analysis), git and gpg (GitOps), Chromium
# (dashboard), InfluxDB, Graphite and VictoriaMetrics (metric providers). Installed when missing and we may
# (root); else say what to run. kubectl (kustomize builds) is not among them: Debian's `kubernetes-client`
# is kubectl 1.20, whose kustomize lacks `components` and `patches`; the machines' image carries a current
# kubectl, and the tests that need it fail under CI=true without it (a missing one is named here).
SYSTEM_BINS := prometheus git gpg ssh-keygen chromium influxd carbon-cache graphite-manage victoria-metrics age docker-registry
system-deps:
	@missing=""; for b in $(SYSTEM_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  pkgs=$$(echo "$$missing" | sed 's/ssh-keygen/openssh-client/; s/gpg/gnupg/; s/influxd/influxdb/; s/carbon-cache/graphite-carbon/; s/graphite-manage/graphite-web/'); \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$pkgs"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	  else echo "missing:$$missing; run: sudo apt-get install$$pkgs"; fi; \
	fi
	@command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 || \
	  echo "missing: kubectl or kustomize (kustomize builds): install a current kubectl (1.21 or newer)"

check: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: check system-deps
	$(PY) -m pytest

# wrk (Debian's package) is the load generator of the OFREP benchmark (bench/flags_bench.py): installed when
# missing and we may (root); else say what to run. Only `make bench` needs it.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing: wrk"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	  else echo "missing: wrk; run: sudo apt-get install wrk"; fi; }

bench: $(STAMP) system-deps bench-deps
	$(PY) bench/run.py

# Seeded chaos trials of the real `rheostat run` (tests/chaos.py; figures in docs/reliability.md).
# CHAOS_TRIALS (default 100) and CHAOS_SEED (default 1) choose how many and which.
chaos: $(STAMP) system-deps
	$(PY) -m tests.chaos

clean:
	rm -rf $(VENV) .rheostat build src/*.egg-info
