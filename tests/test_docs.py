"""Every Python block of the README and docs/ is complete and runs as written, on the CPU, as a
script in a fresh interpreter outside the source tree (so it imports kdops as a user would).
PyLate's blocks (fence line ```python title="pylate"```) run in the PyLate environment
(.venv-pylate, `make .venv-pylate/.deps-installed`): PyLate 1.6 pins an older
sentence-transformers than the main environment's."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

import kdops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYLATE_PYTHON = os.path.join(ROOT, ".venv-pylate", "bin", "python")
# Those present: the sanitizer lane runs a copy of tests/ without the pages (and selects none of these).
PAGES = [p for p in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
         if os.path.exists(p)]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def _blocks() -> list:
    cases = []
    for page in PAGES:
        text = open(page).read()
        for found in FENCE.finditer(text):
            line = text.count("\n", 0, found.start()) + 1
            name = f"{os.path.relpath(page, ROOT)}:{line}"
            pylate = 'title="pylate"' in found.group(1)
            marks = [pytest.mark.skipif(pylate and not os.path.exists(PYLATE_PYTHON), reason="no .venv-pylate")]
            cases.append(pytest.param(found.group(2), PYLATE_PYTHON if pylate else sys.executable, id=name, marks=marks))
    return cases


def test_the_pages_have_python_blocks():
    assert len(_blocks()) >= 5


@pytest.mark.parametrize("code, python", _blocks())
def test_block_runs(code, python, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(kdops.__file__)), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    script = tmp_path / "block.py"  # a file, not -c: multiprocessing's spawn re-imports it
    script.write_text(code)
    out = subprocess.run([python, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_resolve(page):
    """Links between the README, docs/ and the repository's files point at files that exist
    (pages moved from the README into docs/ keep working links)."""
    broken = []
    for target in LINK.findall(open(page).read()):
        path = target.split("#")[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not os.path.exists(os.path.join(os.path.dirname(page), path)):
            broken.append(target)
    assert broken == []
