"""Every Python block of the README and docs/ is complete and runs as written, on the CPU, in a
fresh interpreter outside the source tree (so it imports kdops as a user would). A block that
needs another environment says so on its fence line: ```python title="needs: <what>"``` blocks
are skipped here and run by the test named in that title."""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

import kdops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def _blocks() -> list:
    cases = []
    for page in PAGES:
        text = open(page).read()
        for found in FENCE.finditer(text):
            line = text.count("\n", 0, found.start()) + 1
            name = f"{os.path.relpath(page, ROOT)}:{line}"
            marks = [pytest.mark.skip(reason=found.group(1).strip())] if "needs:" in found.group(1) else []
            cases.append(pytest.param(found.group(2), id=name, marks=marks))
    return cases


def test_the_pages_have_python_blocks():
    assert len(_blocks()) >= 5


@pytest.mark.parametrize("code", _blocks())
def test_block_runs(code, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(kdops.__file__)), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
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
