# Fresh machine: `make demo` sets up .venv and runs the online pipeline on the bundled
# synthetic camera and checkpoint; `make test` builds .venv from nothing and runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages for the real-component tests (GStreamer RTSP server); idempotent,
# quiet, and a no-op without root/apt (those tests then skip, saying why).
system-deps:
	sh scripts/install-system-deps.sh

# The main job on the embedded default: a synthetic live camera with known actions through
# `menet run` with checkpoints/menet-tiny-synth.pt; events live, then a summary. CPU, no downloads.
demo: $(STAMP)
	$(PY) -m stream demo $(DEMO_ARGS)

# Everything, slow-marked tests included (CI runs this), one test at a time (about 19 min on 2 cores).
# Two workers (PYTEST_PARALLEL="-n 2 --dist loadfile") take about 13 min, but on 2 cores the SIGKILL
# and stuck-subscriber fault tests then time out under the other worker's load (two fresh-clone runs,
# 2026-12-01); they pass alone. Serial until those tests are made robust to a busy host.
PYTEST_PARALLEL ?=
test: $(STAMP) system-deps
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=25 $(PYTEST_PARALLEL)

# Skip the slow-marked tests while iterating.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
