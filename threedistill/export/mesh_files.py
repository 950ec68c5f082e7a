"""Mesh files for game engines: binary glTF (glb) with a PBR metallic-roughness material, or OBJ + MTL + PNG.
World convention already matches glTF: +Y up, metres, the asset's front toward +Z, counter-clockwise faces."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import trimesh

from ..errors import ThreeDistillError
from ..utils.files import atomic_write

MAX_PRIMITIVE_VERTICES = 65535  # 16-bit indices: what every engine and WebGL 1 viewer can load


def write_mesh(result, out: Path) -> Path:
    """Write a MeshResult's mesh as .glb or .obj (by suffix); the OBJ's material and texture go beside it."""
    mesh, out = result.mesh, Path(out)
    if len(mesh.vertices) > MAX_PRIMITIVE_VERTICES:
        raise ThreeDistillError(
            f"the mesh has {len(mesh.vertices)} vertices, more than {MAX_PRIMITIVE_VERTICES} in one "
            "primitive: lower --faces"
        )
    suffix = out.suffix.lower()
    if suffix not in (".glb", ".obj"):
        raise ThreeDistillError(f"mesh output {out} must end in .glb or .obj")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".glb":
        data = mesh.export(file_type="glb")
        atomic_write(out, data if isinstance(mesh.visual, trimesh.visual.TextureVisuals) else _matte_material(data))
    else:
        if isinstance(mesh.visual, trimesh.visual.TextureVisuals):
            # MTL has no PBR: a white diffuse factor (Kd multiplies map_Kd in most viewers), no specular; the
            # texture is written beside the OBJ as <stem>.png.
            mesh = mesh.copy()
            mesh.visual.material = trimesh.visual.material.SimpleMaterial(
                image=mesh.visual.material.baseColorTexture,
                diffuse=(255, 255, 255, 255),
                ambient=(255, 255, 255, 255),
                specular=(0, 0, 0, 255),
                name=out.stem,
            )
        mesh.export(out, file_type="obj", include_texture=True, mtl_name=out.stem + ".mtl")
    return out


def _matte_material(glb: bytes) -> bytes:
    """Give every primitive of a vertex-coloured glb a non-metallic PBR material: without one, glTF's default
    material is fully metallic and engines render the colours nearly black."""
    json_length = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20 : 20 + json_length])
    doc["materials"] = doc.get("materials", []) + [
        {
            "name": "vertex_colours",
            "pbrMetallicRoughness": {
                "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                "metallicFactor": 0.0,
                "roughnessFactor": 1.0,
            },
        }
    ]
    for mesh in doc.get("meshes", []):
        for primitive in mesh["primitives"]:
            primitive.setdefault("material", len(doc["materials"]) - 1)
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned, JSON padded with spaces
    rest = glb[20 + json_length :]
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + rest
    return struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body
