# `make demo` and `make test` do all the set-up on a fresh machine (Python 3.11 and pip).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test install clean

$(INSTALLED): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) -m agg_jax.main --config=configs/demo.py --workdir=runs/demo

test: $(INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf runs .pytest_cache
