"""`python -m threedistill.cli ...`, the same as `t3d ...`."""

from . import entry

entry()
