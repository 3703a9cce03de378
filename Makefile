# Set-up is part of every target: a fresh machine needs only Python 3.10+ and these commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-all lint demo benchmark

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# MediaPipe Tasks, for TFLite metadata (its schema classes) and for checking exports the way apps run them.
	# Without its dependencies: they would replace the headless OpenCV with a GUI build that needs libGL, and
	# TensorFlow and the package's own dependencies (matplotlib) bring the rest. Installed last, so that no later
	# pip run reports its undeclared dependencies as broken.
	$(PY) -m pip install --quiet --no-deps "mediapipe==1.2.3"
	touch $(STAMP)

install: $(STAMP)

## make test: create .venv, install the package with its test extra, lint, run the CI test suite.
test: $(STAMP)
	$(PY) -m ruff check keras_retinanet tools tests
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider --durations=15

## make test-all: also the slow tests.
test-all: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check keras_retinanet tools tests
	$(PY) -m ruff format --check keras_retinanet tools tests

## make demo: the main job (synthetic data -> train -> evaluate -> export -> predict), see README.
demo: $(STAMP)
	$(PY) tools/main_job.py $(ARGS)

benchmark: $(STAMP)
	$(PY) tools/benchmark.py $(ARGS)
