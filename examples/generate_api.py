"""Text to 3D from Python: the same as `t3d generate`, returning the run (directory, config, model)."""

import threedistill

run = threedistill.generate(
    prompt="a red cone",
    representation="gaussians",
    steps=300,
    seed=0,
    out="outputs/examples",
    overrides=["guidance.guidance_scale=7.5"],
)
print("run directory:", run.dir, "-", len(run.model), "Gaussians")
print(threedistill.evaluate_run(run.dir))  # silhouette IoU, colour error (front/back for objects with a front)

from threedistill.export.run_export import export_model  # noqa: E402

mesh_path = export_model(run.model, "gaussians", "glb", run.dir / "export" / "api.glb", faces=10000, texture_size=512)
print("mesh:", mesh_path)
