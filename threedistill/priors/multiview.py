"""What makes a diffusers UNet a multi-view prior (MVDream, Shi et al. 2023), kept to the standard on-disk layout:

- **camera condition**: the UNet is a `UNet2DConditionModel` with `class_embed_type="projection"` and
  `projection_class_embeddings_input_dim=16`; its class embedding (linear, SiLU, linear) takes each view's
  flattened camera-to-world matrix (`camera_embedding`) and is added to the timestep embedding, as MVDream's
  `camera_embed` MLP is;
- **attention across views**: every transformer block's self-attention (`attn1`) attends over the tokens of all
  `num_views` views of one object at once (`MultiViewAttnProcessor`); the weights are those of ordinary
  self-attention, so the processor is set at load time and nothing about it is stored but the view count;
- `model_index.json` records `"threedistill": {"multiview": {"num_views": 4}}`, and, for a network trained with
  other camera axes, `"camera_convention"` (`CAMERA_CONVENTIONS`): "threedistill" (default: our world frame as
  it is) or "mvdream" (the official MVDream checkpoints, converted by `mvdream_convert.py`).

Camera conventions. Ours (cameras.py): world +Y up, the object's front facing +Z, OpenGL cameras (looking down
their -Z, +Y up, +X right); azimuth 0 is the camera on +Z, positive azimuth turns it toward +X.

MVDream's (bytedance/MVDream, `mvdream/camera_utils.py`): `create_camera_to_world_matrix(elevation, azimuth)`
builds exactly our orbit camera at unit distance (position (cos e sin a, sin e, cos e cos a), looking at the
origin with +Y up, OpenGL axes), then `get_camera(..., blender_coord=True)` left-multiplies it by
`convert_opengl_to_blender`'s matrix [[1,0,0],[0,0,-1],[0,1,0]] (x, y, z) -> (x, -z, y): the world frame turned
to Blender's +Z up, the camera axes left as OpenGL's. `normalize_camera` scales the position to unit length and
the 4x4 matrix is flattened row-major into the 16 numbers the `camera_embed` MLP reads. threestudio's MVDream
guidance (bytedance/MVDream-threestudio, `threestudio/models/guidance/multiview_diffusion_guidance.py`,
`get_camera_cond` with `camera_condition_type="rotation"`) passes its own camera-to-world matrices unchanged
("the input of threestudio is already blender coordinate system": +Z up, OpenGL camera axes,
`threestudio/data/random_multiview.py`) through `normalize_camera`. So the model reads Blender-frame matrices.
"mvdream" below maps ours into that frame with the same matrix, so our azimuth a and elevation e give exactly
MVDream's `get_camera(azimuth_start=a, elevation=e)` (its azimuth and ours are the same formula before the
turn). Which side the model treats as the front is not stated by these sources; we take MVDream's azimuth 0 (the
camera on Blender's -Y, where Blender's glTF import puts a glTF asset's front, +Z as ours; Objaverse, MVDream's
training data, is glTF). threestudio's azimuth 0 is its +X axis, MVDream's azimuth 90, and MVDream's
`scripts/t2i.py` starts its views at azimuth 90 by default: a prompt's "front view" may sit 90 degrees off.

A batch given to such a UNet holds whole sets: images b*V ... b*V + V-1 are the V views of set b.
"""

from __future__ import annotations

import torch

from ..errors import PriorLoadError

CAMERA_DIM = 16  # the flattened 4x4 camera-to-world matrix

# Our world frame (+Y up, front +Z) seen in Blender's (+Z up, front -Y): (x, y, z) -> (x, -z, y), a rotation of 90
# degrees about +X, the matrix MVDream's convert_opengl_to_blender applies to the world side of its cameras.
_OURS_TO_BLENDER = ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, -1.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))


def _ours(c2w: torch.Tensor) -> torch.Tensor:
    return c2w


def _mvdream(c2w: torch.Tensor) -> torch.Tensor:
    return torch.tensor(_OURS_TO_BLENDER, dtype=c2w.dtype, device=c2w.device) @ c2w


# The world frame a multi-view network's camera condition is written in: our cameras mapped into it.
CAMERA_CONVENTIONS = {"threedistill": _ours, "mvdream": _mvdream}


def check_camera_convention(convention, where: str) -> str:
    """`convention` if it names one of `CAMERA_CONVENTIONS`, else a one-line PriorLoadError."""
    if not isinstance(convention, str) or convention not in CAMERA_CONVENTIONS:
        raise PriorLoadError(
            f"{where}: unknown multiview.camera_convention {convention!r}; known: {', '.join(CAMERA_CONVENTIONS)}"
        )
    return convention


def camera_embedding(c2w: torch.Tensor, convention: str = "threedistill") -> torch.Tensor:
    """MVDream's camera condition: each camera-to-world matrix (B,4,4) of our world, in the world frame of
    `convention` (`CAMERA_CONVENTIONS`; "mvdream": the official checkpoints' Blender frame), flattened row-major to
    16 numbers, its position scaled to unit distance from the origin (the object's centre), so the condition says
    where the camera looks from, not how far away it is."""
    to_frame = CAMERA_CONVENTIONS[check_camera_convention(convention, "camera_embedding")]
    c2w = to_frame(c2w.to(torch.float32)).clone()
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
