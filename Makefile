# The two commands of the README. Each sets up everything it needs on a fresh machine
# (Python 3.11, gcc, nvcc under /usr/local/cuda): a virtualenv with the pinned torch, then
# kdops built in place (CPU kernels, CUDA kernels when the toolkit is there, and the CUDA
# kernels for the CUDA simulator).
#   make bench   the benchmark table (results under benchmarks/results/<device>/)
#   make test    the whole test suite, then the simulated CUDA kernels under AddressSanitizer +
#                UBSan and ThreadSanitizer, and their line coverage; and a CPU-only wheel built
#                from the sdist, installed in a fresh virtualenv and tested there (test-wheel)
# The parts of `make test`, for running one at a time: build, pytest, sim-asan, sim-tsan, coverage,
# test-wheel. Packaging: make sdist, make wheel (every arch).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed

# PyLate's environment for tests/test_integration_pylate.py (see requirements-pylate.txt): its
# own packages first, then the main venv's site-packages through a .pth, so torch is not installed twice.
# The .pth adds the main venv as a site directory (site.addsitedir), so that its own .pth files run
# too: kdops' editable install then imports from any directory, as in the main venv.
PYLATE_VENV ?= .venv-pylate
PYLATE_DEPS := $(PYLATE_VENV)/.deps-installed

# torch guesses CUDA_HOME from `which nvcc`, which may be a wrapper outside the toolkit.
export CUDA_HOME ?= /usr/local/cuda
# Build kdops._C_sim (torch.ops.kdops_sim: the CUDA kernels on the simulator), with gcov counters.
export KDOPS_SIM ?= 1
export KDOPS_SIM_COVERAGE ?= 1

.PHONY: bench test test-lane-pytest test-lane-sanitizers build build-cpu-cuda build-sim pytest sim-asan sim-tsan coverage \
	mutants sdist wheel test-wheel clean peer-wheels peer-check

bench: build
	$(PY) -m benchmarks.run

# Two lanes side by side: pytest runs on one core (the suite is single-threaded), so the
# sanitizer builds and runs take the other meanwhile. Each lane's torch runs one thread:
# a parallel region whose second thread waits for the other lane's core stalls until it gets it
# (pytest took 744 s in its lane with torch's default of 2 threads, against 457 s alone). Tests
# that check thread-count independence set their thread counts themselves. -Otarget keeps each
# part's output in one piece.
test: $(DEPS)
	$(MAKE) -j3 -Otarget $(BUILDS) $(PYLATE_DEPS)
	$(PY) -m kdops.info
	OMP_NUM_THREADS=1 $(MAKE) -j2 -Otarget test-lane-pytest test-lane-sanitizers

test-lane-pytest:
	$(MAKE) pytest
	$(MAKE) coverage

test-lane-sanitizers:
	MAX_JOBS=1 $(MAKE) sim-asan
	$(MAKE) sim-tsan
	MAX_JOBS=1 $(MAKE) test-wheel

# The two extensions build side by side (`make test` also installs the PyLate venv, mostly I/O,
# beside them): each build ends on one long compile while the other's keep the second core busy.
# kdops._C_sim is built in place with a build folder that stays (pip's editable build compiles
# in a temporary one), so `make coverage` finds its gcov notes under build/sim.
BUILDS := build-cpu-cuda build-sim
build: $(DEPS)
	$(MAKE) -j2 -Otarget $(BUILDS)
	$(PY) -m kdops.info

build-cpu-cuda: $(DEPS)
	KDOPS_SIM=0 $(PY) -m pip install -q --no-compile --no-build-isolation -e .

build-sim: $(DEPS)
	KDOPS_SIM=only $(PY) setup.py -q build_ext --inplace --build-temp build/sim

# --no-compile: no .pyc for the ~15k .py files of torch and the rest at install (76 s of a fresh
# setup on the 2-core machine); Python compiles what it imports, once, on first use.
$(DEPS): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements-dev.txt
	touch $@

pytest:
	find build -name '*.gcda' -delete 2>/dev/null || true
	$(PY) -m pytest -q

# Line coverage of csrc/cuda/ by the pytest run above (gcov counters of kdops._C_sim).
coverage:
	$(PY) -m gcovr --root . --filter 'csrc/cuda/' --gcov-executable gcov --txt-metric line \
		--print-summary --sort uncovered-percent build

# --- the simulated kernels under sanitizers --------------------------------------------------
# ASan + UBSan: kdops._C_sim built again with the sanitizers into a copy of the package under
# build/asan, and the simulated tests (-m sim) run against it with fewer examples each, less the
# gradchecks, opchecks and torch.compile tests: those call the kernels of the other tests at the
# same small shapes hundreds of times over (finite differences, tracing) and took 236 s of the
# run's 436 s; they run unsanitized in `make pytest`. Python is
# not built with ASan: its runtime is preloaded, with libstdc++ (else ASan cannot intercept C++
# throws from a library loaded later, and the first TORCH_CHECK aborts). --capture=sys: pytest
# captures Python's sys.stdout/stderr only, so an ASan or UBSan report, written to file
# descriptor 2 as the process aborts, reaches the log (pytest's default fd capture swallowed it).
ASAN_DIR := build/asan
sim-asan:
	rm -rf $(ASAN_DIR)/kdops $(ASAN_DIR)/tests && mkdir -p $(ASAN_DIR)
	cp -r kdops tests benchmarks pyproject.toml $(ASAN_DIR)/
	rm -f $(ASAN_DIR)/kdops/_C_sim*.so
	KDOPS_SIM_SANITIZE=address KDOPS_SIM_COVERAGE=0 $(PY) setup.py -q build_ext \
		--build-lib $(ASAN_DIR) --build-temp $(ASAN_DIR)/tmp
	cd $(ASAN_DIR) && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libstdc++.so)" \
		ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		KDOPS_TEST_MAX_EXAMPLES=4 $(abspath $(PY)) -m pytest -q -p no:cacheprovider --capture=sys -m sim tests \
		-k "not gradcheck and not opcheck and not torch_compile"

# TSan: a standalone runner (tests/sim_tsan/run_ops.cpp) calling every kdops_sim op, linked with
# the simulated kernels built with -fsanitize=thread; a race report fails the run.
TSAN_DIR := build/tsan
TORCH_DIR = $(shell $(PY) -c "import os, torch; print(os.path.dirname(torch.__file__))")
PY_INCLUDE = $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['include'])")
PY_LIBDIR = $(shell $(PY) -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
PY_LIB = $(shell $(PY) -c "import sysconfig; print('python' + sysconfig.get_config_var('LDVERSION'))")
TSAN_FLAGS = -fsanitize=thread -O1 -g1 -std=c++20 -fPIC -Wno-unknown-pragmas -Wno-tsan -DKDOPS_SIM -DKDOPS_NS=kdops_sim \
	-DTORCH_EXTENSION_NAME=_C_sim -include csrc/sim/cuda_sim.h -isystem csrc/sim/include -fno-extern-tls-init -Icsrc \
	-I$(TORCH_DIR)/include -I$(TORCH_DIR)/include/torch/csrc/api/include -I$(PY_INCLUDE)
TSAN_SOURCES := csrc/kdops.cpp $(wildcard csrc/sim/*.cpp) $(filter-out csrc/cuda/build_info.cu,$(wildcard csrc/cuda/*.cu)) \
	$(wildcard csrc/cuda/*.cpp) \
	tests/sim_tsan/run_ops.cpp
TSAN_OBJECTS := $(patsubst %,$(TSAN_DIR)/%.o,$(TSAN_SOURCES))
TSAN_HEADERS := $(wildcard csrc/*/*.h csrc/*/*.cuh)

$(TSAN_DIR)/%.cu.o: %.cu $(TSAN_HEADERS)
	@mkdir -p $(dir $@)
	g++ $(TSAN_FLAGS) -x c++ -c $< -o $@

$(TSAN_DIR)/%.cpp.o: %.cpp $(TSAN_HEADERS)
	@mkdir -p $(dir $@)
	g++ $(TSAN_FLAGS) -c $< -o $@

$(TSAN_DIR)/run_ops: $(TSAN_OBJECTS)
	g++ -fsanitize=thread $^ -o $@ -L$(TORCH_DIR)/lib -Wl,-rpath,$(TORCH_DIR)/lib -Wl,--no-as-needed \
		-ltorch -ltorch_cpu -lc10 -L$(PY_LIBDIR) -Wl,-rpath,$(PY_LIBDIR) -l$(PY_LIB)

sim-tsan: $(TSAN_DIR)/run_ops
	TSAN_OPTIONS=halt_on_error=1:exitcode=66 $(TSAN_DIR)/run_ops

# --- packaging -------------------------------------------------------------------------------
# sdist: every source and header (MANIFEST.in). wheel: built from that sdist in a clean folder
# (so a file missing from the sdist fails the build), for every default arch, then repaired by
# auditwheel to a manylinux tag, torch's own libraries excluded: the user's torch provides them.
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' kdops/_version.py)
SDIST = dist/kdops-$(VERSION).tar.gz
AUDITWHEEL_EXCLUDES := $(foreach lib,libtorch.so libtorch_cpu.so libtorch_cuda.so libtorch_python.so libc10.so \
	libc10_cuda.so libcudart.so.13 libgomp.so.1,--exclude $(lib))

# The GPU peers' wheels in .whl/ for benchmarks/gpu_check.sh (git-ignored: pass carry=[".whl"] to the
# device tool).
peer-wheels: $(DEPS)
	PYTHON=$(PY) benchmarks/peer_wheels.sh

# The GPU peers' serving calls (benchmarks/cases_maxsim_serving.py) under Triton's interpreter on the
# CPU, against kdops.reference (benchmarks/check_serving_peers.py), the wheels in a private target.
peer-check: peer-wheels
	$(PY) -m pip install -q --upgrade --no-deps --target /tmp/kdops-peers .whl/*.whl
	TRITON_INTERPRET=1 PYTHONPATH=/tmp/kdops-peers $(PY) -m benchmarks.check_serving_peers

sdist: $(DEPS)
	rm -f $(SDIST)
	$(PY) setup.py -q egg_info --egg-base build sdist -d dist  # no kdops.egg-info in the root: it would shadow the installed metadata

# build/wheel/src: the sdist unpacked; KDOPS_WHEEL_CUDA=0 builds a CPU-only wheel (CI's test-wheel).
KDOPS_WHEEL_CUDA ?= 1
wheel: sdist
	rm -rf build/wheel && mkdir -p build/wheel/src build/wheel/raw
	tar -xzf $(SDIST) -C build/wheel/src --strip-components=1
	cd build/wheel/src && KDOPS_CUDA=$(KDOPS_WHEEL_CUDA) KDOPS_SIM=0 $(abspath $(PY)) -m pip wheel -q --no-build-isolation \
		--no-deps -w ../raw .
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m auditwheel repair $(AUDITWHEEL_EXCLUDES) -w dist build/wheel/raw/kdops-*.whl

# The installed package, tested as a user has it: a CPU-only wheel built from the sdist, installed
# into a fresh virtualenv (torch and the test tools reused from .venv through a .pth, so torch
# is not installed twice), the op tests run from a folder outside the source tree. The
# simulated kernels are not part of a wheel; they run in `make pytest`.
WHEEL_VENV := build/wheel-venv
WHEEL_TESTS := tests/test_packaging.py tests/test_build.py tests/test_argument_checks.py \
	tests/test_margin_mse.py tests/test_plackett_luce.py tests/test_maxsim.py
test-wheel: $(DEPS)
	rm -f dist/kdops-*.whl
	$(MAKE) wheel KDOPS_WHEEL_CUDA=0
	rm -rf $(WHEEL_VENV) build/wheel-tests && mkdir -p build/wheel-tests
	$(PYTHON) -m venv --without-pip $(WHEEL_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(WHEEL_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/main-venv.pth"
	$(PY) -m pip --python $(WHEEL_VENV)/bin/python install -q --no-compile --no-deps dist/kdops-*.whl
	cp -r tests build/wheel-tests/
	cd build/wheel-tests && KDOPS_CUDA=0 KDOPS_EXPECT_INSTALLED=1 $(abspath $(WHEEL_VENV))/bin/python -m pytest -q \
		-p no:cacheprovider -m "not sim" $(WHEEL_TESTS)

# The mutation test of the simulated kernels (not part of `make test`: each of the corpus's bugs
# rebuilds kdops._C_sim and runs the sim tests of its file, an hour or more in all): applies each
# mutant of tests/mutants/corpus.toml in turn, prints a kill table, restores the sources.
mutants: $(DEPS)
	$(PY) -m tests.mutants.run_mutants --python $(abspath $(PY))

$(PYLATE_DEPS): requirements-pylate.txt | $(DEPS)
	$(PYTHON) -m venv --without-pip $(PYLATE_VENV)
	$(PY) -c "import sysconfig; print('import site; site.addsitedir(%r)' % sysconfig.get_paths()['purelib'])" > \
		"$$($(PYLATE_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/main-venv.pth"
	$(PY) -m pip --python $(PYLATE_VENV)/bin/python install -q --no-compile --no-deps -r requirements-pylate.txt
	touch $@

clean:
	rm -rf build dist kdops/*.so *.egg-info
