"""Test-session setup shared by every test file."""

from __future__ import annotations

import os
import tempfile

# torch.compile's on-disk caches (/tmp/torchinductor_<user> by default) outlive a build, and
# a cached graph that calls a kdops op with an older schema fails after a rebuild. Each test
# session compiles into a fresh folder of its own.
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="kdops-inductor-")
