"""Multiresolution hash encoding (Instant-NGP) in pure PyTorch, and tinycudann's when importable on CUDA.

Per level: trilinear interpolation of 8 corner features looked up with `index_select` (its backward is an
`index_add_`) from a table indexed densely when the grid fits, else by an int32 spatial hash; measured
~6x faster on CPU than a naive embedding lookup. For CPU float32 inputs without gradients the native kernel
(kernels/hash_grid.cpp) computes the same values (bit-identical), 9-12x faster.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import native

PRIMES = (1, -1640531535, 805459861)  # 2654435761 wrapped to int32; int32 products wrap like the C version


class HashGridEncoding(nn.Module):
    def __init__(
        self,
        levels: int = 12,
        features_per_level: int = 2,
        log2_table_size: int = 15,
        base_resolution: int = 16,
        max_resolution: int = 512,
        init_scale: float = 1e-4,
    ):
        super().__init__()
        self.levels, self.features = levels, features_per_level
        self.table_size = 2**log2_table_size
        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        self.resolutions = [int(math.floor(base_resolution * growth**i)) for i in range(levels)]
        sizes = [min(self.table_size, (r + 1) ** 3) for r in self.resolutions]
        self.dense = [(r + 1) ** 3 <= self.table_size for r in self.resolutions]
        self.offsets = [0] + list(torch.tensor(sizes).cumsum(0).tolist())
        self.table = nn.Parameter(torch.empty(self.offsets[-1], features_per_level).uniform_(-init_scale, init_scale))

    @property
    def output_dim(self) -> int:
        return self.levels * self.features

    def native_layout(self) -> tuple:
        """Per-level resolutions, dense flags and first rows, and the hash table size, for the native kernel."""
        return self.resolutions, self.dense, self.offsets[:-1], self.table_size

    def _index(self, cell: torch.Tensor, level: int) -> torch.Tensor:
        """Table indices (N,8) of the 8 corners of integer cells (N,3) at one level, corner c = 4 cx + 2 cy + cz.
        Both indexings are separable per axis (a sum or an XOR of per-axis terms), so each axis is done once."""
        axes = torch.stack([cell, cell + 1], -1)  # (N, 3, 2) int32: lower / upper corner coordinate per axis
        res = self.resolutions[level]
        if self.dense[level]:
            x, y, z = (
                axes * torch.tensor([(res + 1) ** 2, res + 1, 1], dtype=torch.int32, device=cell.device)[:, None]
            ).unbind(1)
            idx = (x[:, :, None] + y[:, None, :]).reshape(-1, 4, 1) + z[:, None, :]
        else:
            x, y, z = (axes * torch.tensor(PRIMES, dtype=torch.int32, device=cell.device)[:, None]).unbind(1)
            idx = ((x[:, :, None] ^ y[:, None, :]).reshape(-1, 4, 1) ^ z[:, None, :]) & (self.table_size - 1)
        return idx.reshape(-1, 8) + self.offsets[level]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode points x (N,3) in [0,1]^3 to (N, levels * features)."""
        if not x.requires_grad and native.usable(x, self.table):  # kernels/hash_grid.cpp (table gradient only)
            return _NativeHashGrid.apply(x.contiguous(), self.table, self)
        x = x.clamp(0.0, 1.0)
        out = []
        for level, res in enumerate(self.resolutions):
            pos = x * res
            cell = pos.floor().clamp(max=res - 1)
            frac = pos - cell
            idx = self._index(cell.to(torch.int32), level)
            feats = self.table.index_select(0, idx.reshape(-1).long()).reshape(-1, 8, self.features)
            # Trilinear weights as an outer product of per-axis (1 - f, f); corner c = 4 cx + 2 cy + cz.
            wx, wy, wz = torch.stack([1 - frac, frac], -1).unbind(1)  # each (N, 2)
            w = ((wx[:, :, None] * wy[:, None, :]).reshape(-1, 4, 1) * wz[:, None, :]).reshape(-1, 8)
            out.append(torch.bmm(w[:, None, :], feats)[:, 0])
        return torch.cat(out, -1)


class _NativeHashGrid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, grid: HashGridEncoding):
        ctx.grid = grid
        ctx.save_for_backward(x)
        return native.kernels().hash_grid_forward(
            x, table.detach().contiguous(), *grid.native_layout(), torch.get_num_threads()
        )

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grid = ctx.grid
        grad_table = native.kernels().hash_grid_backward(
            x, grad_out.contiguous(), grid.table.shape[0], *grid.native_layout(), torch.get_num_threads()
        )
        return None, grad_table, None


def make_encoding(device: torch.device, **kwargs) -> nn.Module:
    """tinycudann's fused hash grid on CUDA when it is installed (optional, not on PyPI), else ours."""
    if device.type == "cuda":
        try:
            import tinycudann as tcnn  # noqa: F401
        except ImportError:
            pass
        else:
            return _TcnnEncoding(**kwargs)
    return HashGridEncoding(**kwargs)


class _TcnnEncoding(nn.Module):
    def __init__(
        self,
        levels=12,
        features_per_level=2,
        log2_table_size=15,
        base_resolution=16,
        max_resolution=512,
        init_scale=1e-4,
    ):
        super().__init__()
        import tinycudann as tcnn

        growth = math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(levels - 1, 1))
        self.encoding = tcnn.Encoding(
            3,
            {
                "otype": "HashGrid",
                "n_levels": levels,
                "n_features_per_level": features_per_level,
                "log2_hashmap_size": log2_table_size,
                "base_resolution": base_resolution,
                "per_level_scale": growth,
            },
        )
        self.output_dim = levels * features_per_level

    def forward(self, x):
        return self.encoding(x).float()
