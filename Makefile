# Fresh machine: `make demo` sets up .venv and runs the online pipeline on the bundled
# synthetic camera and checkpoint; `make test` builds .venv from nothing and runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all test-fast venv system-deps clean

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

# The default suite: every test not marked `slow` (the budget: under 10 minutes on 2 cores).
# `test-slow` runs the slow-marked real-component tests (RTSP servers, multi-process pipelines,
# SIGKILL faults, soak, the demo: ~15 min serial); CI (.ci/run) runs both. Both run one test at
# a time: with two workers on 2 cores the real-time fault tests time out under the other's load.
PYTEST_PARALLEL ?=
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q --durations=25 $(PYTEST_PARALLEL)
test: $(STAMP) system-deps
	$(PYTEST) -m "not slow"

test-slow: $(STAMP) system-deps
	$(PYTEST) -m slow

# everything, as CI runs it
test-all: test test-slow

# the former name of `make test`'s set
test-fast: test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
