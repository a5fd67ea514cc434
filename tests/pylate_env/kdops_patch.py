"""pytest plugin (``-p kdops_patch``) that runs a test session on kdops' PyLate patch, so PyLate's
own test suite (downloaded by tests/test_integration_pylate.py) exercises kdops wherever it
calls PyLate's scorers and losses.

The patch is applied once collection is done, and the test modules' and doctests' own bindings
of PyLate's names are rebound too: a test module's ``from pylate.scores import colbert_scores``
runs at collection, and doctest discovery only finds the docstrings of functions defined in the
module they document, so patching before collection would skip PyLate's doctests of the very
functions replaced. The swapped names go to the file named by ``KDOPS_PATCH_REPORT``, so the
caller can check that the patch took effect."""

from __future__ import annotations

import os

import pytest

from kdops.integrations import pylate as kd_pylate


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    swapped = kd_pylate.patch()
    for item in items:
        if isinstance(item, pytest.DoctestItem):
            kd_pylate._patcher.rebind(item.dtest.globs)
        module = getattr(item, "module", None)
        if module is not None:
            kd_pylate._patcher.rebind(vars(module))
    report = os.environ.get("KDOPS_PATCH_REPORT")
    if report:
        with open(report, "w") as out:
            out.write("\n".join(swapped))
