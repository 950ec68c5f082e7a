"""A captured scene as training views: its images at the working resolution, drawn at random by the Trainer with
their targets, and the photometric objective (L1 + D-SSIM, as 3DGS) that fits them."""

from __future__ import annotations

import torch

from ..cameras import Cameras
from ..errors import ThreeDistillError
from ..objective import Objective


def image_size(scene, index: int, height: int | None = None) -> tuple[int, int]:
    """(H, W) to render view `index` at: its stored size, or `height` rows keeping its aspect ratio."""
    w, h = (int(v) for v in scene.sizes[index])
    return (h, w) if height is None else (height, max(8, round(height * w / h)))


class SceneViews:
    """The training views of a scene, loaded once at the working resolution, drawn at random by the Trainer."""

    def __init__(self, scene, indices: list[int], height: int, device: torch.device):
        if not indices:
            raise ThreeDistillError("the scene has no training views")
        self.image_size = image_size(scene, indices[0], height)
        self.cameras = scene.cameras(indices).to(device)
        images, masks = scene.load_images(indices, *self.image_size)
        self.images = images.to(device)
        self.masks = None if masks is None else masks.to(device)

    def __len__(self) -> int:
        return self.images.shape[0]

    def sample(self, generator: torch.Generator, n: int) -> tuple[Cameras, dict]:
        idx = torch.randperm(len(self), generator=generator)[:n]
        targets = {"images": self.images[idx], "masks": None if self.masks is None else self.masks[idx]}
        return self.cameras[idx], targets


class PhotometricLoss(Objective):
    """The reconstruction objective in the guidance slot of the Trainer: L1 + D-SSIM against the captured images
    (pixels outside a view's mask are ignored)."""

    name = "photometric"
    targets = ("images", "masks")

    def __init__(self, lambda_dssim: float = 0.2):
        super().__init__()
        self.lambda_dssim = lambda_dssim

    def forward(
        self, rgb: torch.Tensor, cameras: Cameras, prompt, step: int, generator=None, images=None, masks=None
    ) -> dict[str, torch.Tensor]:
        import kornia

        weight = torch.ones_like(rgb[:, :1]) if masks is None else masks
        l1 = ((rgb - images).abs() * weight).sum() / (weight.sum() * rgb.shape[1]).clamp_min(1)
        ssim = kornia.metrics.ssim(rgb * weight, images * weight, window_size=7)
        dssim = (1 - ssim.mean()) / 2
        loss = (1 - self.lambda_dssim) * l1 + self.lambda_dssim * dssim
        return {"loss_photometric": loss, "l1": l1.detach(), "dssim": dssim.detach()}
