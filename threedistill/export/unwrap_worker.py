"""The child process of `texture.unwrap`: xatlas's parametrisation of one mesh, in its own process so a crash or a
stall cannot take the export down. It imports only numpy and xatlas (not torch: a second saved on every export).

xatlas's chart search on one large connected surface runs on one thread and takes about 4 s for the 20,000
faces of a default export (2 cores). The mesh is therefore cut into compact pieces of at most PIECE_FACES faces
(a k-d split of the face centres, always the same for the same mesh) and every piece goes into the same atlas as
its own mesh: xatlas searches the pieces' charts in parallel and packs all charts into one texture. The cuts
become chart borders (seams); the pieces' charts are fewer and larger than the whole mesh's (a cone: 381 charts
against 535), and the whole takes about 0.9 s (docs/benchmarks/performance.md).

Usage: python -m threedistill.export.unwrap_worker MESH.npz UV.npz TEXTURE_SIZE"""

from __future__ import annotations

import sys

import numpy as np

PIECE_FACES = 1500


def pieces(vertices: np.ndarray, faces: np.ndarray, max_faces: int = PIECE_FACES) -> list[np.ndarray]:
    """Face index arrays that cover `faces` once each: halved along the longest extent of their face centres
    (a stable sort, so equal meshes give equal pieces) until each has at most `max_faces`."""
    centres = vertices[faces].mean(1)
    out, todo = [], [np.arange(len(faces))]
    while todo:
        part = todo.pop()
        if len(part) <= max_faces:
            out.append(part)
            continue
        c = centres[part]
        axis = int(np.argmax(c.max(0) - c.min(0)))
        order = part[np.argsort(c[:, axis], kind="stable")]
        half = len(order) // 2
        todo += [order[half:], order[:half]]
    return out


def unwrap_worker(src: str, dst: str, texture_size: int) -> None:
    """Read vertices and faces from `src`, write xatlas's vertex map (into the input vertices), faces and uvs
    (packed for a texture_size^2 texture with 2 texels between charts) to `dst`."""
    import xatlas

    data = np.load(src)
    vertices, faces = data["vertices"], data["faces"]
    atlas = xatlas.Atlas()
    used = []
    for part in pieces(vertices, faces):
        ids, local = np.unique(faces[part], return_inverse=True)
        atlas.add_mesh(vertices[ids], local.reshape(-1, 3).astype(np.uint32))
        used.append(ids)
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = texture_size, 2
    atlas.generate(xatlas.ChartOptions(), pack)
    vmaps, out_faces, uvs, offset = [], [], [], 0
    for index, ids in enumerate(used):
        vmapping, piece_faces, piece_uvs = atlas[index]
        vmaps.append(ids[vmapping])
        out_faces.append(piece_faces.astype(np.int64) + offset)
        uvs.append(piece_uvs)
        offset += len(vmapping)
    np.savez(dst, vmapping=np.concatenate(vmaps), faces=np.concatenate(out_faces), uvs=np.concatenate(uvs))


if __name__ == "__main__":
    unwrap_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
