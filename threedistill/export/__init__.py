"""Exporters: splat files (3DGS .ply, .splat) now; meshes for game engines (glb/obj) follow."""
