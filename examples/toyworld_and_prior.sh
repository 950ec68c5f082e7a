#!/usr/bin/env bash
# Tour of what works today: the toy world's ground truth and the embedded prior.
set -euo pipefail
t3d toyworld list
t3d toyworld render --object "red duck" --azimuth 30 --elevation 15 --what all --out outputs/examples/duck.png
t3d prior info
t3d prior sample --prompt "a blue cone, side view" --n 8 --out outputs/examples/blue_cone.png
t3d prior eval --n 2 --out outputs/examples/prior_gate.json
