"""Packed enumeration of integer boxes, shared by the rasterizers: every cell of every box becomes one row,
so per-(primitive, tile or pixel) work runs as flat tensor operations instead of Python loops."""

from __future__ import annotations

import torch


def box_cells(x0: torch.Tensor, y0: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor):
    """For boxes with corners (x0, y0) and sizes (nx, ny) (each (N,) long; empty boxes have size 0): the box id,
    x and y of every cell, row-major inside each box, boxes in order."""
    counts = nx * ny
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    local = torch.arange(int(counts.sum()), device=counts.device) - torch.repeat_interleave(
        counts.cumsum(0) - counts, counts
    )
    return owner, x0[owner] + local % nx[owner], y0[owner] + local // nx[owner]
