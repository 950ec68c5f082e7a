"""What makes a diffusers UNet a multi-view prior (MVDream, Shi et al. 2023), kept to the standard on-disk layout:

- **camera condition**: the UNet is a `UNet2DConditionModel` with `class_embed_type="projection"` and
  `projection_class_embeddings_input_dim=16`; its class embedding (linear, SiLU, linear) takes each view's
  flattened camera-to-world matrix (`camera_embedding`) and is added to the timestep embedding, as MVDream's
  `camera_embed` MLP is;
- **attention across views**: every transformer block's self-attention (`attn1`) attends over the tokens of all
  `num_views` views of one object at once (`MultiViewAttnProcessor`); the weights are those of ordinary
  self-attention, so the processor is set at load time and nothing about it is stored but the view count;
- `model_index.json` records `"threedistill": {"multiview": {"num_views": 4}}`.

A batch given to such a UNet holds whole sets: images b*V ... b*V + V-1 are the V views of set b.
"""

from __future__ import annotations

import torch

from ..errors import PriorLoadError

CAMERA_DIM = 16  # the flattened 4x4 camera-to-world matrix


def camera_embedding(c2w: torch.Tensor) -> torch.Tensor:
    """MVDream's camera condition: each camera-to-world matrix (B,4,4) flattened to 16 numbers, its position scaled
    to unit distance from the origin (the object's centre), so the condition says where the camera looks from,
    not how far away it is."""
    c2w = c2w.to(torch.float32).clone()
    position = c2w[:, :3, 3]
    c2w[:, :3, 3] = position / position.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return c2w.reshape(-1, CAMERA_DIM)


class MultiViewAttnProcessor:
    """Self-attention over the tokens of every view of a set: (S*V, N, C) is attended as (S, V*N, C).

    Implements diffusers' attention-processor call for the transformer blocks' `attn1` (3-D hidden states, no
    group or spatial norm); with `num_views` = 1 it is ordinary self-attention."""

    def __init__(self, num_views: int):
        self.num_views = int(num_views)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("MultiViewAttnProcessor serves self-attention over (batch, tokens, channels) only")
        views = self.num_views
        batch, tokens, channels = hidden_states.shape
        if batch % views:
            raise ValueError(f"a multi-view prior denoises sets of {views} views; got a batch of {batch} images")
        residual = hidden_states
        x = hidden_states.reshape(batch // views, views * tokens, channels)
        heads = attn.heads
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        if getattr(attn, "norm_q", None) is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.reshape(batch, tokens, -1)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def check_multiview_unet(unet, num_views: int, where: str) -> None:
    """A one-line error unless `unet` takes the 16-number camera condition MVDream's layout needs."""
    config = unet.config
    kind, width = config.get("class_embed_type"), config.get("projection_class_embeddings_input_dim")
    if kind != "projection" or width != CAMERA_DIM:
        raise PriorLoadError(
            f"{where}: a multi-view prior's UNet needs class_embed_type 'projection' with "
            f"projection_class_embeddings_input_dim {CAMERA_DIM} (the camera), got {kind!r} and {width!r}"
        )
    if not isinstance(num_views, int) or isinstance(num_views, bool) or not 1 <= num_views <= 16:
        raise PriorLoadError(f"{where}: multiview.num_views must be a whole number in 1..16, got {num_views!r}")


def make_multiview(unet, num_views: int):
    """Set the cross-view processor on every self-attention of `unet` (in place; returns it). Cross-attention to
    the text keeps its own processor."""
    processors = {
        name: MultiViewAttnProcessor(num_views) if name.endswith("attn1.processor") else processor
        for name, processor in unet.attn_processors.items()
    }
    unet.set_attn_processor(processors)
    return unet


def multiview_unet_from(unet, num_views: int = 4):
    """A multi-view UNet grown from a single-view one (MVDream fine-tunes Stable Diffusion this way): the same
    weights, a camera embedding added whose last layer starts at zero (so the start denoises as the single-view
    model with attention widened to all views) and the cross-view processors set."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in unet.config.items() if k != "_use_default_values"}  # else those keys are reset
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_DIM)
    grown = UNet2DConditionModel.from_config(config)
    missing, unexpected = grown.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not key.startswith("class_embedding.") for key in missing):
        raise PriorLoadError(f"cannot grow a multi-view UNet: keys differ ({missing[:3]}, {unexpected[:3]})")
    torch.nn.init.zeros_(grown.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(grown.class_embedding.linear_2.bias)
    return make_multiview(grown, num_views)
