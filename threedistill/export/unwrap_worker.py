"""The child process of `texture.unwrap`: xatlas's parametrisation of one mesh, in its own process so a crash or a
stall cannot take the export down. It imports only numpy and xatlas (not torch: a second saved on every export).

Usage: python -m threedistill.export.unwrap_worker MESH.npz UV.npz TEXTURE_SIZE"""

from __future__ import annotations

import sys

import numpy as np


def unwrap_worker(src: str, dst: str, texture_size: int) -> None:
    """Read vertices and faces from `src`, write xatlas's vertex map, faces and uvs (packed for a
    texture_size^2 texture with 2 texels between charts) to `dst`."""
    import xatlas

    data = np.load(src)
    atlas = xatlas.Atlas()
    atlas.add_mesh(data["vertices"], data["faces"])
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = texture_size, 2
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, faces, uvs = atlas[0]
    np.savez(dst, vmapping=vmapping, faces=faces, uvs=uvs)


if __name__ == "__main__":
    unwrap_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
