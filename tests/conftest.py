"""Test-session setup shared by every test file."""

from __future__ import annotations

import os
import tempfile

# torch.compile's on-disk caches (/tmp/torchinductor_<user> by default) outlive a build, and
# a cached graph that calls a kdops op with an older schema fails after a rebuild. Each test
# session compiles into a fresh folder of its own.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="kdops-inductor-")
# torch.profiler (tests/test_launch_counts.py, tests/test_no_host_sync.py) logs two "USDT" lines a
# call and a failed GPU count through kineto on stderr, which the sanitizer lane's --capture=sys
# passes to CI's log (432 lines of it); level 6 is above kineto's highest.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")


import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tests.helpers import on_backend  # noqa: E402

# Property tests take their backend from the `device` fixture, which holds for all examples.
settings.register_profile("kdops", suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile("kdops")


@pytest.fixture
def device(request):
    """The backend a test is parametrised with (`@devices`), as the torch device of its tensors;
    for "sim" the public API calls torch.ops.kdops_sim while the test runs."""
    with on_backend(request.param) as torch_device:
        yield torch_device


CPU_ISAS = ["avx512", "avx2", "generic"]  # KDOPS_CPU_ISA: the hand-vectorised CPU kernels' paths


def cpu_has(isa: str) -> bool:
    """Whether this CPU runs the `isa` path of kdops' CPU kernels (kdops refuses the ones it lacks)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDOPS_CPU_ISA", isa)
        try:
            torch.ops.kdops.maxsim(torch.ones(1, 1, 1), torch.ones(1, 1, 1), None, None, None, False)
        except RuntimeError as e:
            assert "lacks the" in str(e)
            return False
    return True


@pytest.fixture(params=CPU_ISAS)
def cpu_isa(request, device, monkeypatch):
    """Runs a CPU test once per ISA path this CPU has (KDOPS_CPU_ISA: the MaxSim panels, the
    Margin-MSE rows, the sorting network of short rankings); other backends run once."""
    if request.node.callspec.params["device"] != "cpu":
        if request.param != CPU_ISAS[0]:
            pytest.skip("the ISA paths are the CPU kernel's")
        return None
    if not cpu_has(request.param):
        pytest.skip(f"this CPU lacks {request.param}")
    monkeypatch.setenv("KDOPS_CPU_ISA", request.param)
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "sim: runs the CUDA kernels on the simulator (select with -m sim)")


def pytest_collection_modifyitems(config, items):
    """Marks the tests that run the simulated kernels (`-m sim`: the sanitizer runs), and caps
    every property test's example count at KDOPS_TEST_MAX_EXAMPLES when set (the sanitized
    builds are several times slower; every case family still runs)."""
    cap = os.environ.get("KDOPS_TEST_MAX_EXAMPLES")
    for item in items:
        callspec = getattr(item, "callspec", None)
        simulated_module = item.module.__name__.endswith(("test_simulated_kernels", "test_sim_schedules"))
        if simulated_module or (callspec and callspec.params.get("device") == "sim"):
            item.add_marker(pytest.mark.sim)
        test = getattr(item, "obj", None)
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if cap is not None and current is not None:
            test._hypothesis_internal_use_settings = settings(current, max_examples=min(int(cap), current.max_examples))
