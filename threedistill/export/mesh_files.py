"""Mesh files for game engines: binary glTF (glb) with a PBR metallic-roughness material, or OBJ + MTL + PNG.
World convention already matches glTF: +Y up, metres, the asset's front toward +Z, counter-clockwise faces."""
from __future__ import annotations

from pathlib import Path

from ..errors import ThreeDistillError

MAX_PRIMITIVE_VERTICES = 65535  # 16-bit indices: what every engine and WebGL 1 viewer can load


def write_mesh(result, out: Path) -> Path:
    """Write a MeshResult's mesh as .glb or .obj (by suffix); the OBJ's material and texture go beside it."""
    mesh, out = result.mesh, Path(out)
    if len(mesh.vertices) > MAX_PRIMITIVE_VERTICES:
        raise ThreeDistillError(f"the mesh has {len(mesh.vertices)} vertices, more than {MAX_PRIMITIVE_VERTICES} in one "
                                "primitive: lower --faces")
    suffix = out.suffix.lower()
    if suffix not in (".glb", ".obj"):
        raise ThreeDistillError(f"mesh output {out} must end in .glb or .obj")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".glb":
        out.write_bytes(mesh.export(file_type="glb"))
    else:
        material = getattr(mesh.visual, "material", None)
        if material is not None:
            material.name = out.stem  # the texture is written beside the OBJ as <stem>.png
        mesh.export(out, file_type="obj", include_texture=True, mtl_name=out.stem + ".mtl")
    return out
