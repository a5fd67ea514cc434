"""The kdops release, one place; a built distribution appends a local tag naming the torch and
CUDA it was built for (setup.py), e.g. 0.1.0+pt2141cu130."""

__version__ = "0.1.0"
