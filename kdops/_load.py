"""Loads kdops._C, the compiled kernels, and refuses it with a message that says what to do when
it cannot run here: missing (a source tree that was never built, often one that shadows an
installed kdops), or built against another torch (torch's C++ ABI changes between minor
releases, so a library built for one fails to load, or worse, in another)."""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
from types import ModuleType

import torch

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def torch_release(version: str) -> tuple[int, int]:
    """'2.14.1+cu130' -> (2, 14): the part of torch's version that fixes its C++ ABI."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(found.group(1)), int(found.group(2))


def installed_version() -> str | None:
    """The version of the installed kdops distribution (with its local tag, e.g.
    '0.1.0+pt2141cu130', naming the torch and CUDA it was built for), or None when kdops runs
    from a source tree without being installed."""
    try:
        return importlib.metadata.version("kdops")
    except importlib.metadata.PackageNotFoundError:
        return None


def _in_source_tree() -> bool:
    return os.path.exists(os.path.join(os.path.dirname(_PACKAGE_DIR), "setup.py"))


def _missing_message(error: ImportError) -> str:
    where = f"kdops was imported from {_PACKAGE_DIR}"
    if _in_source_tree():
        installed = installed_version()
        also = (f" An installed kdops {installed} exists, but Python puts the current directory first on "
                "sys.path, so this source tree hides it: run from outside the source tree to use it."
                if installed else "")
        return (f"{where}, a kdops source tree whose compiled kernels (kdops._C) were never built.{also} "
                "To use this source tree, build it in place: `make build`, or "
                "`pip install --no-build-isolation -e .` (docs/install.md). Original error: "
                f"{error}")
    return (f"{where}, but its compiled kernels (kdops._C) are missing: reinstall kdops "
            f"(docs/install.md). Original error: {error}")


def _mismatch_message(built: str) -> str:
    return (f"kdops was built against torch {built}, but torch {torch.__version__} is running: torch's C++ ABI "
            "differs between minor releases, so kdops must be rebuilt (or a kdops wheel for this torch "
            f"installed): `pip install --no-build-isolation --force-reinstall kdops` builds it for torch "
            f"{torch.__version__} (docs/install.md).")


def load_extension() -> ModuleType:
    """kdops._C, checked against the running torch."""
    if not glob.glob(os.path.join(_PACKAGE_DIR, "_C.*so")):
        raise ImportError(_missing_message(ModuleNotFoundError("No module named 'kdops._C'")))
    try:
        from kdops import _C
    except ImportError as error:
        # An undefined symbol in libtorch is the usual sign of a build for another torch; the
        # installed distribution's local version names the one it was built for, if known.
        installed = installed_version()
        built = installed.partition("+")[2] if installed else ""
        hint = (f" This kdops ({installed}) names the torch it was built for in its version tag."
                if built else "")
        raise ImportError(
            f"kdops._C ({_PACKAGE_DIR}) failed to load with torch {torch.__version__}: {error}.{hint} "
            "Most often kdops was built against another torch: rebuild or reinstall it for this one "
            "(docs/troubleshooting.md).") from error
    built = str(_C.build_info()["torch"])
    if torch_release(built) != torch_release(torch.__version__):
        raise ImportError(_mismatch_message(built))
    return _C
