"""The `vlm` reward (VLM3D, guidance_spec section 10): a Qwen2-VL or Qwen2.5-VL model from a local directory is
shown the views and asked one yes/no question (does it show the prompt, as one consistent shape); R = logit(Yes)
- logit(No) of its first answer token. The stock image processor goes through PIL / numpy and would cut the
gradient, so `pixel_values` are built here with torch ops (spec 10.2): resize to multiples of patch x merge,
normalise (no rescale: renders are in [0,1] already), and the processor's patch layout, the temporal axis being
the image repeated; the chat text with its image placeholders is tokenised as ids only."""

from __future__ import annotations

import math

import torch

from ..errors import ThreeDistillError
from . import REWARDS, Reward, RewardConfig, load_pretrained, model_dir, normalise_images, processor_settings

SYSTEM = "You are a helpful assistant."


def patchify(pixels: torch.Tensor, patch: int, merge: int, temporal: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """One normalised image (C,H,W), H and W multiples of patch x merge, as Qwen2-VL's flattened patches
    (grid_h * grid_w, C * temporal * patch * patch), in its processor's order, and its (t, h, w) grid."""
    c, h, w = pixels.shape
    gh, gw = h // patch, w // patch
    x = pixels.reshape(c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, p, p)
    x = x[:, :, :, :, :, None].expand(*x.shape[:5], temporal, patch, patch)  # the image as `temporal` frames
    return x.reshape(gh * gw, c * temporal * patch * patch), (1, gh, gw)


def fitted_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's "smart" size: each side a multiple of `factor`, the area within [min_pixels, max_pixels]."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h, w = (
            max(factor, math.floor(height / scale / factor) * factor),
            max(factor, math.floor(width / scale / factor) * factor),
        )
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * scale / factor) * factor, math.ceil(width * scale / factor) * factor
    return h, w


@REWARDS.register("vlm")
class VLMReward(Reward):
    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg)
        from transformers import AutoConfig, AutoModelForImageTextToText

        folder = model_dir(cfg.model, "Qwen2-VL")
        kind = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
        if kind not in ("qwen2_vl", "qwen2_5_vl"):
            raise ThreeDistillError(f"reward vlm takes a Qwen2-VL or Qwen2.5-VL model; {folder} holds a {kind} model")
        self.model, self.tokenizer = load_pretrained(AutoModelForImageTextToText, folder, "VLM")
        self.settings = settings = processor_settings(folder)
        vision = self.model.config.vision_config
        self.patch = int(settings.get("patch_size", getattr(vision, "patch_size", 14)))
        self.merge = int(settings.get("merge_size", getattr(vision, "spatial_merge_size", 2)))
        self.temporal = int(settings.get("temporal_patch_size", getattr(vision, "temporal_patch_size", 2)))
        size = settings.get("size", {})
        self.min_pixels = int(settings.get("min_pixels", size.get("shortest_edge", 56 * 56)))
        self.max_pixels = int(settings.get("max_pixels", size.get("longest_edge", 28 * 28 * 1280)))
        self.yes_id, self.no_id = (self.first_token(word) for word in (cfg.yes, cfg.no))
        if self.yes_id == self.no_id:
            raise ThreeDistillError(f"reward.yes {cfg.yes!r} and reward.no {cfg.no!r} start with the same token")

    def first_token(self, word: str) -> int:
        """The first sub-token of `word` without special tokens (spec 10.5)."""
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ThreeDistillError(f"the VLM's tokenizer turns {word!r} into no tokens")
        return int(ids[0])

    def pixel_values(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel_values, image_grid_thw) of images (k,3,H,W) in [0,1], differentiably."""
        factor = self.patch * self.merge
        h, w = fitted_size(images.shape[-2], images.shape[-1], factor, self.min_pixels, self.max_pixels)
        x = normalise_images(images, (h, w), self.settings)
        patches, grids = zip(*(patchify(img, self.patch, self.merge, self.temporal) for img in x))
        return torch.cat(patches), torch.tensor(grids, device=x.device)

    def input_ids(self, prompt: str, grids: torch.Tensor) -> torch.Tensor:
        """The chat's token ids: each image as <|vision_start|>, its <|image_pad|> tokens, <|vision_end|>."""
        images = "".join(
            "<|vision_start|>" + "<|image_pad|>" * (int(g.prod()) // self.merge**2) + "<|vision_end|>" for g in grids
        )
        question = self.cfg.question.format(prompt=prompt, views=len(grids))
        text = (
            f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{images}{question}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        return torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]])

    def logits(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        """The logits of the first answer token (vocabulary,)."""
        pixels, grids = self.pixel_values(images)
        ids = self.input_ids(prompt, grids).to(pixels.device)
        image_token = self.model.config.image_token_id
        out = self.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=(ids == image_token).long(),  # 1 at image tokens (what the processor returns)
            pixel_values=pixels.to(self.model.dtype),
            image_grid_thw=grids,
        )
        return out.logits[0, -1].float()

    def score(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        logits = self.logits(images, prompt)
        return logits[self.yes_id] - logits[self.no_id]
