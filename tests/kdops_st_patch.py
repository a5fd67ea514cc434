"""pytest plugin (``-p kdops_st_patch``, with tests/ on PYTHONPATH) that runs a test session on
kdops' sentence-transformers patch, for running sentence-transformers' own tests (from its
repository) against kdops; see docs/integrations.md for the commands and results. Applied once
collection is done, with the test modules' own bindings of the library's names rebound too (a
test module's ``from sentence_transformers.util import maxsim`` runs at collection)."""

from __future__ import annotations

import pytest

from kdops.integrations import sentence_transformers as kd_st


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    kd_st.patch()
    for item in items:
        module = getattr(item, "module", None)
        if module is not None:
            kd_st._patcher.rebind(vars(module))
