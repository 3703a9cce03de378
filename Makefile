# Set-up is part of every target: a fresh machine needs only Python 3.10+ and these commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest-xdist workers, one test file each at a time (--dist loadfile keeps a file's fixtures in one process): most
# tests keep one core busy, so two workers halve the suite on CI's two cores (docs/test-durations.md).
TEST_WORKERS ?= 2

.PHONY: install test test-all test-web web-deps lint demo benchmark

# MediaPipe Tasks (the `mobile` extra), for TFLite metadata (its schema classes) and for checking exports the way
# apps run them. Without its dependencies: they would add a GUI build of OpenCV that needs libGL beside the
# headless one, and TensorFlow and the package's own dependencies (matplotlib) bring the rest. Installed last, so
# that no later pip run reports its undeclared dependencies as broken.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps "mediapipe==1.2.3"
	touch $(STAMP)

install: $(STAMP)

## make test: create .venv, install the package with its test extra, lint, run the CI test suite.
test: $(STAMP)
	$(PY) -m ruff check keras_retinanet tools tests
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=25

## make test-all: also the slow tests, the browser test among them (web-deps installs what it needs).
test-all: $(STAMP) web-deps
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

## make test-web: the web page (web/) in headless Chromium against TFLiteDetector (tests/test_web.py).
test-web: $(STAMP) web-deps
	$(PY) -m pytest -q -p no:cacheprovider tests/test_web.py

# The web page's npm packages (pinned in web/package-lock.json) and Debian's Chromium for the browser test.
# Not part of `make install`: only the web page and its test need them.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
web/node_modules/.package-lock.json: web/package-lock.json
	@command -v npm >/dev/null || { echo "the web page needs Node.js 20+ with npm (https://nodejs.org)" >&2; exit 2; }
	cd web && npm ci --no-audit --no-fund

web-deps: web/node_modules/.package-lock.json
	test -x $(CHROMIUM) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

lint: $(STAMP)
	$(PY) -m ruff check keras_retinanet tools tests
	$(PY) -m ruff format --check keras_retinanet tools tests

## make demo: the main job (synthetic data -> train -> evaluate -> export -> predict), see README.
demo: $(STAMP)
	$(PY) tools/main_job.py $(ARGS)

benchmark: $(STAMP)
	$(PY) tools/benchmark.py $(ARGS)
