"""The drag-conditioned teacher of Drag-SDS (guidance_spec.md section 9.2), behind one small interface.

DYG's teacher is LightningDrag (SD-1.5-inpainting with an appearance encoder, an IP-Adapter and a point-embedding
net). Its input carries: the noisy image x_t, the inpainting mask m, the masked reference render r_ref (1 - m),
the reference itself (appearance) and the handle/target points. The project's toy teacher keeps exactly those
inputs as image channels of one pixel-space UNet (diffusers' UNet2DModel), so a conv net can read them:

    [x_t (3), m (1), r_ref (1 - m) (3), r_ref (3), hint (3), handle map (1), target map (1)]   = 15 channels

where the point condition is the two Gaussian point maps plus `hint`, the reference with the dragged part cut out
and pasted where the points say (a 2D cut-and-paste: the part's pixels moved by the handles' displacements,
blended by distance to the targets; its old place left grey). Classifier-free guidance is over the point
condition only (spec 9.7: no text): the unconditional input has zero point maps and the unmoved reference as its
hint. m is the dilated union of the part's visible footprint and where the drag moves it.

`drag_condition` builds both inputs from a reference render, the part's visible footprint and the projected
points; the training code (toyworld/training/drag_teacher.py) and Drag-SDS (editing/drag_sds.py) use the same
function, so the teacher sees at edit time what it saw in training.

What the network's 3 output channels mean is the scheduler's `prediction_type`: `epsilon` (the noise, the first
shipped teachers) or `sample` (the clean image; with `hint_residual` in model_index.json's `threedistill` entry, as
a correction added to the hint channel, so an untrained network already returns the cut-and-paste). The teacher's
`eps` converts either to the noise Drag-SDS and DDIM use. An eps-predicting network has to get the clean image
right through x0 = (x_t - sigma_t eps) / alpha_t, which at high t multiplies its error by sigma_t / alpha_t; when
the condition nearly fixes the clean image (a drag mostly copies its reference), predicting the image is the
well-posed target (toyworld/training/drag_teacher.py).

A teacher directory is diffusers-shaped: `model_index.json` (`_class_name: ToyWorldDragPipeline`), `unet/`
(UNet2DModel, 15 input channels) and `scheduler/`. A real drag model (LightningDrag's weights) does not fit this
input and would need its own loader class with the same `guided_eps` (not built: see the README).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import PriorLoadError
from ..utils.files import read_json
from .base import alpha_sigma_at, epsilon_from_prediction

CHANNELS = 15
POINT_SIGMA = 1.0  # pixels: the width of a point in the handle / target maps
BLEND_SIGMA = 0.2  # of the image size: how far a target's displacement reaches when several pairs share a part
MASK_DILATION = 2  # pixels (DYG: a 30x30 kernel twice at 512 px, about 2 px at 32)
CLASS_NAME = "ToyWorldDragPipeline"


def _grid(h: int, w: int, device) -> torch.Tensor:
    """Pixel centres (H, W, 2) as (x, y)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) + 0.5,
        torch.arange(w, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([xs, ys], -1)


def displacement(handles: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per pixel (B, H, W, 2) the 2D drag displacement: sum_k w_k(p) (t_k - h_k), w_k proportional to
    exp(-|p - t_k|^2 / 2 s^2) over the valid pairs and normalised to sum 1 (one pair: a constant shift)."""
    grid = _grid(h, w, handles.device)
    s = BLEND_SIGMA * max(h, w)
    d2 = ((grid[None, :, :, None, :] - targets[:, None, None, :, :]) ** 2).sum(-1)  # (B,H,W,K)
    logits = -d2 / (2 * s * s) + torch.where(valid, 0.0, -1e9)[:, None, None, :]
    weights = torch.softmax(logits, dim=-1)
    return torch.einsum("bhwk,bkc->bhwc", weights, targets - handles)


def _sample(image: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of image (B, C, H, W) at pixel positions (B, H, W, 2) (x, y); outside: 0."""
    h, w = image.shape[-2:]
    norm = torch.stack([positions[..., 0] / w * 2 - 1, positions[..., 1] / h * 2 - 1], -1)
    return F.grid_sample(image, norm, mode="bilinear", padding_mode="zeros", align_corners=False)


def point_maps(points: torch.Tensor, valid: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 1, H, W): the sum of a Gaussian bump (POINT_SIGMA px) at each valid point, at most 1."""
    grid = _grid(h, w, points.device)
    d2 = ((grid[None, :, :, None, :] - points[:, None, None, :, :]) ** 2).sum(-1)
    bumps = torch.exp(-d2 / (2 * POINT_SIGMA**2)) * valid[:, None, None, :]
    return bumps.sum(-1).clamp(max=1.0)[:, None]


def drag_condition(
    reference: torch.Tensor,
    part: torch.Tensor,
    handles: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    moved: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(conditional input, unconditional input, mask m): the 12 channels that follow x_t for each, and m.

    reference (B,3,H,W) in [-1, 1]: the unedited render; part (B,1,H,W) in [0, 1]: the dragged part's visible
    footprint in it; handles / targets (B,K,2): pixel positions (x, y), `valid` (B,K) marking real pairs (padding
    otherwise). `moved` (render (B,3,H,W) in [-1, 1], footprint (B,1,H,W)): where the part goes, when the caller
    knows better than the 2D cut-and-paste (a 3D motion of the part rendered); the hint is then built from them."""
    h, w = reference.shape[-2:]
    if valid is None:
        valid = torch.ones(handles.shape[:2], dtype=torch.bool, device=reference.device)
    valid = valid.bool()
    if moved is None:
        source = _grid(h, w, reference.device)[None] - displacement(handles, targets, valid, h, w)
        moved_part = _sample(part, source)
        moved_ref = _sample(reference, source)
    else:
        moved_ref, moved_part = moved
    covered = moved_part > 0.5
    hint = torch.where(covered, moved_ref, torch.where(part > 0.5, torch.zeros_like(reference), reference))
    m = (torch.maximum(part, moved_part) > 0.1).float()
    if MASK_DILATION:
        m = F.max_pool2d(m, 2 * MASK_DILATION + 1, stride=1, padding=MASK_DILATION)
    maps = torch.cat([point_maps(handles, valid, h, w), point_maps(targets, valid, h, w)], 1)
    shared = [m, reference * (1 - m), reference]
    cond = torch.cat(shared + [hint, maps], 1)
    uncond = torch.cat(shared + [reference, torch.zeros_like(maps)], 1)
    return cond, uncond, m


def inpainting_eps(
    eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """The network's noise prediction inside the mask m, and outside it the noise that makes the clean image the
    reference: eps = m eps_net + (1 - m)(x_t - alpha_t r_ref) / sigma_t. An inpainting model leaves what lies
    outside its mask as it was; built in, the teacher spends nothing on copying it (training and use alike)."""
    m, reference = condition[:, :1], condition[:, 4:7]
    outside = epsilon_from_prediction("sample", reference, x_t, *alpha_sigma_at(alphas_cumprod, t))
    return m * eps + (1 - m) * outside


def inpainting_x0(raw: torch.Tensor, condition: torch.Tensor, hint_residual: bool) -> torch.Tensor:
    """The clean image of a `sample`-predicting network: inside m its prediction (plus the hint channel with
    `hint_residual`: the hint when conditional, the reference when the points are dropped), outside m the
    reference."""
    m, reference, hint = condition[:, :1], condition[:, 4:7], condition[:, 7:10]
    inside = raw + hint if hint_residual else raw
    return m * inside + (1 - m) * reference


def guidance_scale(step: int, steps: int, start: float = 4.0) -> float:
    """DYG's decaying point-CFG scale s(k) = (s0 - 1)(1 - k/K)^2 + 1 (diffusers convention)."""
    return (start - 1.0) * (1.0 - min(step, steps) / max(steps, 1)) ** 2 + 1.0


class DragTeacher:
    """A drag-conditioned denoiser loaded from a directory (the embedded `assets/priors/toyworld-drag`)."""

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        from diffusers import DDPMScheduler, UNet2DModel

        from .diffusers_prior import embedded_prior_path

        root = Path(path) if path is not None else embedded_prior_path("toyworld-drag")
        index_path = root / "model_index.json"
        if not index_path.is_file():
            raise PriorLoadError(
                f"{root} is not a drag teacher directory (no model_index.json); give a directory written by "
                f"`t3d prior train-drag` (model_index.json, unet/, scheduler/)"
            )
        index = read_json(index_path, "drag teacher index", error=PriorLoadError)
        if index.get("_class_name") != CLASS_NAME:
            raise PriorLoadError(
                f"{index_path}: _class_name is {index.get('_class_name')!r}; the drag teacher loader reads "
                f"{CLASS_NAME} directories (a real drag model such as LightningDrag needs its own loader)"
            )
        for part in ("unet", "scheduler"):
            if not (root / part).is_dir():
                raise PriorLoadError(f"{root}: the drag teacher has no {part}/ folder")
        try:
            self.unet = UNet2DModel.from_pretrained(root / "unet").float().eval().requires_grad_(False).to(device)
            scheduler = DDPMScheduler.from_pretrained(root / "scheduler")
        except (OSError, ValueError, RuntimeError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PriorLoadError(f"drag teacher {root} is unreadable: {reason[:200]}") from None
        if self.unet.config.in_channels != CHANNELS:
            raise PriorLoadError(
                f"{root}/unet takes {self.unet.config.in_channels} input channels; a drag teacher takes {CHANNELS}"
            )
        self.prediction = scheduler.config.prediction_type
        if self.prediction not in ("epsilon", "sample"):
            raise PriorLoadError(
                f"{root}/scheduler predicts {self.prediction!r}; a drag teacher predicts 'epsilon' or 'sample'"
            )
        self.hint_residual = bool((index.get("threedistill") or {}).get("hint_residual", False))
        self.path, self.scheduler = root, scheduler
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.resolution = int(self.unet.config.sample_size)

    def __repr__(self) -> str:
        return f"DragTeacher({self.path}, {self.resolution}px, predicts {self.prediction})"

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        t = t.expand(x_t.shape[0]) if t.numel() == 1 else t
        raw = self.unet(torch.cat([x_t, condition], 1), t).sample
        if self.prediction == "sample":
            x0 = inpainting_x0(raw, condition, self.hint_residual)
            return epsilon_from_prediction("sample", x0, x_t, *alpha_sigma_at(self.alphas_cumprod, t))
        return inpainting_eps(raw, x_t, t, condition, self.alphas_cumprod)

    @torch.no_grad()
    def guided_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """eps_u + s (eps_c - eps_u), both branches in one call (s = 1: the conditional prediction only)."""
        b = x_t.shape[0]
        t = t.expand(b) if t.numel() == 1 else t
        if scale == 1.0:
            return self.eps(x_t, t, cond)
        eps = self.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond]))
        return eps[b:] + scale * (eps[:b] - eps[b:])

    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, uncond: torch.Tensor, scale: float = 4.0, steps: int = 50, seed: int = 0
    ) -> torch.Tensor:
        """DDIM (eta 0) samples in [-1, 1] for the given conditions."""
        from diffusers import DDIMScheduler

        ddim = DDIMScheduler.from_config(self.scheduler.config, prediction_type="epsilon")  # guided_eps is noise
        ddim.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((cond.shape[0], 3, *cond.shape[-2:]), generator=g).to(cond.device)
        for t in ddim.timesteps:
            eps = self.guided_eps(x, t.reshape(1).to(cond.device), cond, uncond, scale)
            x = ddim.step(eps, t, x).prev_sample
        return x.clamp(-1, 1)
