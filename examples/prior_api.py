"""The same as the shell tour, from Python: ground truth, the prior interface, and sampling."""

import torch

from threedistill.cameras import orbit_cameras
from threedistill.priors import load_prior
from threedistill.priors.sampling import sample_images
from threedistill.toyworld.render import render_toy
from threedistill.utils.images import save_image

gt = render_toy("duck", "red", orbit_cameras([0, 90, 180], 15.0, 2.9), 128, 128)
save_image(gt["rgb"], "outputs/examples/duck_views.png")

prior = load_prior()  # the embedded toy prior; load_prior("/path/to/stable-diffusion") for a local SD directory
x = prior.to_diffusion_space(gt["rgb"])  # renders -> diffusion space (differentiable)
t = torch.tensor([500, 500, 500])
noise = torch.randn_like(x)
eps = prior.predict_noise(prior.add_noise(x, noise, t), t, prior.encode_prompt(["a red duck"] * 3))
print("noise-prediction error of the prior on ground truth:", float(((eps - noise) ** 2).mean()))
save_image(sample_images(prior, ["a red duck, front view"] * 4, seed=0), "outputs/examples/duck_samples.png")
