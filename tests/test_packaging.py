"""What a user installs: the sdist holds every source, the version names the torch it was built
for, `import kdops` refuses another torch or an unbuilt source tree with what to do, and
kdops.info judges the visible GPU against the archs built. `make test-wheel` runs this file
against the wheel installed in a fresh virtualenv (KDOPS_EXPECT_INSTALLED=1)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch

import kdops
from kdops import _load
from kdops.ops import arch_verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED = os.environ.get("KDOPS_EXPECT_INSTALLED") == "1"
in_source_tree = pytest.mark.skipif(INSTALLED or not os.path.exists(os.path.join(ROOT, "setup.py")),
                                    reason="needs the source tree")


def _tracked(*folders: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return set(out.stdout.split())


@in_source_tree
def test_sdist_holds_every_source_and_header(tmp_path):
    """Every tracked file under csrc/ and kdops/ (sources, headers, the simulator, the autograd
    kernels) is in the sdist, with the license: the sdist of cc137c9 held none of the 55 headers."""
    # egg_info's folder outside the tree: a kdops.egg-info in the root would shadow the installed
    # distribution's metadata for every later importlib.metadata lookup run from the root.
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path), "sdist", "-d",
                    str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    (archive,) = tmp_path.glob("kdops-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    expected = {f for f in _tracked("csrc", "kdops") if not f.endswith(".so")}
    expected |= {"LICENSE", "README.md", "setup.py", "pyproject.toml"}
    assert expected - members == set()
    assert not any(name.startswith(("tests/", "build/")) or name.endswith(".so") for name in members)


def test_running_torch_is_the_release_kdops_was_built_against():
    built = kdops.build_info()["torch_built"]
    assert _load.torch_release(built) == _load.torch_release(torch.__version__)


def test_import_refuses_another_torch_release(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.3.1+cu121")
    with pytest.raises(ImportError, match=r"built against torch 2\.\d+.*torch 2\.3\.1\+cu121 is running.*rebuilt"):
        _load.load_extension()


def test_installed_version_names_the_torch_and_cuda_of_the_build():
    """setup.py's local tag: +pt<torch major minor patch>cu<CUDA> or cpu."""
    version = _load.installed_version()
    if version is None:
        pytest.skip("kdops runs from a source tree that is not installed")
    release, _, tag = version.partition("+")
    assert release == kdops.__version__
    major, minor, patch = re.findall(r"\d+", kdops.build_info()["torch_built"])[:3]
    device = ("cu" + torch.version.cuda.replace(".", "")) if kdops.build_info()["cuda_kernels"] else "cpu"
    assert tag == f"pt{major}{minor}{patch}{device}"


@in_source_tree
def test_unbuilt_source_tree_says_what_to_do(tmp_path):
    """A source tree without kdops._C, imported because it is the current directory, raises an
    ImportError that says so (cc137c9: a circular-import message)."""
    shutil.copytree(os.path.join(ROOT, "kdops"), tmp_path / "kdops",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(os.path.join(ROOT, "setup.py"), tmp_path / "setup.py")
    out = subprocess.run([sys.executable, "-c", "import kdops"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "source tree whose compiled kernels (kdops._C) were never built" in out.stderr
    assert "make build" in out.stderr
    assert "circular import" not in out.stderr


@pytest.mark.skipif(not INSTALLED, reason="KDOPS_EXPECT_INSTALLED=1: run by `make test-wheel` only")
def test_tests_run_against_the_installed_package():
    """The installed-wheel lane imports kdops from the virtualenv's site-packages, not a source tree."""
    path = os.path.realpath(kdops.__file__)
    assert os.path.realpath(sys.prefix) in path and "site-packages" in path, path
    assert _load.installed_version() is not None


@pytest.mark.parametrize(
    "capability, archs, verdict",
    [
        ((9, 0), ["sm_80", "sm_90", "compute_100"], "ok: machine code for sm_90"),
        ((8, 9), ["sm_80", "sm_90"], "ok: machine code for sm_80 runs on sm_89"),
        ((12, 0), ["sm_80", "sm_100", "compute_100"], "ok: PTX of compute_100"),
        ((10, 0), ["sm_90"], "NO KERNEL for sm_100: rebuild with TORCH_CUDA_ARCH_LIST=10.0"),
        ((7, 5), ["sm_80", "compute_100"], "NO KERNEL for sm_75"),
        ((9, 0), [], "no CUDA kernels"),
    ],
)
def test_arch_verdict(capability, archs, verdict):
    """Machine code runs on later minors of its major only; PTX on any newer GPU."""
    assert arch_verdict(capability, archs).startswith(verdict)


def test_info_reports_versions_paths_and_cpu_path():
    out = subprocess.run([sys.executable, "-m", "kdops.info"], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(kdops.__file__))).stdout
    info = kdops.build_info()
    assert f"kdops {kdops.__version__}" in out and info["path"] in out
    assert f"kdops built against torch {info['torch_built']}" in out
    assert info["cpu_isa"] in ("avx512", "avx2", "generic") and f"instruction set: {info['cpu_isa']}" in out
