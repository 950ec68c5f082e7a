"""The `clip` reward: cosine similarity of a transformers CLIPModel's image embedding of each view with the
prompt's text embedding (or with a visual prompt's image embedding, VP3D), averaged over the views. The image
preprocessing (resize to the model's input, normalisation) is torch, so the gradient reaches the renders."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import REWARDS, Reward, RewardConfig, load_pretrained, model_dir, normalise_images, processor_settings


@REWARDS.register("clip")
class CLIPReward(Reward):
    def __init__(self, cfg: RewardConfig):
        super().__init__(cfg)
        from transformers import CLIPModel

        folder = model_dir(cfg.model, "CLIP")
        self.model, self.tokenizer = load_pretrained(CLIPModel, folder, "CLIP")
        self.settings = processor_settings(folder)
        self.size = int(self.model.config.vision_config.image_size)
        self._target: tuple[str, torch.Tensor] | None = None
        self.visual_prompt = None
        if cfg.visual_prompt:
            from .reference import read_rgba

            self.visual_prompt = read_rgba(cfg.visual_prompt)[0][None]  # (1,3,H,W) in [0,1], on white

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        pixels = normalise_images(images, (self.size, self.size), self.settings)
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixels)), dim=-1)

    def target(self, prompt: str) -> torch.Tensor:
        """The embedding the views are pulled toward: the visual prompt's, else the prompt's (cached)."""
        key = "<visual prompt>" if self.visual_prompt is not None else prompt
        if self._target is None or self._target[0] != key:
            with torch.no_grad():
                if self.visual_prompt is not None:
                    emb = self.image_embeddings(self.visual_prompt.to(self.model.device))
                else:
                    tokens = self.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt")
                    emb = _features(self.model.get_text_features(**tokens.to(self.model.device)))
            self._target = (key, F.normalize(emb, dim=-1)[0])
        return self._target[1]

    def score(self, images: torch.Tensor, prompt: str) -> torch.Tensor:
        return (self.image_embeddings(images) @ self.target(prompt)).mean()


def _features(out) -> torch.Tensor:
    """The projected embeddings of get_image_features / get_text_features (a tensor, or in transformers 5 an
    output whose pooler_output holds them)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
