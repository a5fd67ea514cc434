# The two commands of the README. Each sets up everything it needs on a fresh machine
# (Python 3.11, gcc, nvcc under /usr/local/cuda): a virtualenv with the pinned torch, then
# kdops built in place (CPU kernels, and CUDA kernels when the toolkit is there).
#   make bench   the benchmark table (results under benchmarks/results/<device>/)
#   make test    the whole test suite

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed

# PyLate's environment for tests/test_integration_pylate.py (see requirements-pylate.txt): its
# own packages first, then the main venv's site-packages through a .pth, so torch is not installed twice.
PYLATE_VENV ?= .venv-pylate
PYLATE_DEPS := $(PYLATE_VENV)/.deps-installed

# torch guesses CUDA_HOME from `which nvcc`, which may be a wrapper outside the toolkit.
export CUDA_HOME ?= /usr/local/cuda

.PHONY: bench test build clean

bench: build
	$(PY) -m benchmarks.run

test: build $(PYLATE_DEPS)
	$(PY) -m pytest -q

build: $(DEPS)
	$(PY) -m pip install -q --no-build-isolation -e .
	$(PY) -m kdops.info

$(DEPS): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(PYLATE_DEPS): requirements-pylate.txt | $(DEPS)
	$(PYTHON) -m venv --without-pip $(PYLATE_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(PYLATE_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/main-venv.pth"
	$(PY) -m pip --python $(PYLATE_VENV)/bin/python install -q --no-deps -r requirements-pylate.txt
	touch $@

clean:
	rm -rf build kdops/*.so *.egg-info
