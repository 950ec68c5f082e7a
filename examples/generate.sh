#!/usr/bin/env bash
# Text to 3D on CPU with the embedded toy prior, then the ground-truth evaluation and exports.
set -euo pipefail
t3d generate --prompt "a red cone" --seed 0 --out outputs/examples
t3d generate --prompt "a blue duck" --representation nerf --steps 200 --out outputs/examples guidance.guidance_scale=10
run=$(ls -d outputs/examples/a-red-cone/*/ | tail -n 1)
t3d eval "$run"                                  # also scores the exported export/model.glb
t3d export "$run" --format obj --faces 10000     # OBJ + MTL + PNG beside export/model.glb
t3d export "$run" --format splat                 # the Gaussians for web splat viewers
t3d bench fidelity --seeds 1 --representation gaussians --out outputs/examples/fidelity.md
