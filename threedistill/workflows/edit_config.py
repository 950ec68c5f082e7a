"""The typed config of `t3d edit` runs (read by the edit workflow and by anything that loads an edit run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from ..config import absolute_paths
from ..editing import EDIT_METHODS
from ..editing.dds import DDSConfig
from ..editing.drag_model import DragFieldConfig, DragLearningRates
from ..editing.in2n import In2NConfig
from ..editing.lift import absolute_view_masks, parse_view_mask
from ..editing.region import EditRegion
from ..editing.region_model import EditLearningRates
from ..errors import ConfigError
from ..trainer import CameraRange, TrainerConfig


@dataclass
class EditGuidanceConfig(DDSConfig):
    """The teacher settings of every edit method (DDS's, shared) and in2n's optional InstructPix2Pix teacher."""

    instruct_pix2pix: Optional[str] = None  # in2n: a local diffusers InstructPix2Pix directory (replaces `prior`)
    image_guidance_scale: float = 1.5  # in2n with InstructPix2Pix: s_I (guidance_scale is s_T)


@dataclass
class DragEditConfig:
    """Method drag (Drag-SDS, guidance_spec.md 9): the points, the Gaussians that move, the scaffold, the teacher."""

    points: list = field(default_factory=list)  # "hx,hy,hz>tx,ty,tz" in the region's frame (see region_frame)
    file: Optional[str] = None  # DYG's drag_points.json (handle_points, target_points), in the same frame
    gaussian_mask: Optional[str] = None  # DYG's gaussian_mask.pt (tensors only) or a .npy: M instead of `region`
    context: Optional[str] = None  # box:/sphere: framing the edit cameras; None: M and the targets, grown x2
    teacher: Optional[str] = None  # drag teacher directory; None: the embedded assets/priors/toyworld-drag
    lora_rank: int = 16
    lr_embedding: float = 1.0e-3
    lr_lora: float = 5.0e-4
    ring_k: int = 20  # the KNN ring: this many nearest neighbours of each masked Gaussian
    lambda_reg: float = 2500.0  # the ring regulariser (trainer.lambdas.reg overrides it too)
    depth_tolerance: float = 0.1  # of the context radius: how far behind the scene a masked pixel may lie
    # no Gaussian moves further than this many times the longest handle -> target distance; null: unbounded, as in
    # DYG. Bounded by default: with the toy teacher the unbounded field flung the part away as floaters on 3 of the
    # 12 toy drags (handle errors 0.86-1.88 of the object's size; 0.26-0.41 with 2, though the part still does not
    # survive the edit: docs/benchmarks/drag.md)
    max_move: Optional[float] = 2.0
    # where the dragged Gaussians start: source (the field starts at zero, as in DYG), warp (where the geometric
    # drag of `t3d bench drag`'s warp baseline puts them) or joint (the part moved rigidly: turned about where it
    # joins the rest, or shifted; editing/drag_points.joint_motion); the field learns from there
    start: str = "source"
    # the teacher's 2D hint (the part where the drag puts it): 2d (the reference's part cut out and pasted by the
    # points' 2D displacement, as in training) or start (the scene with the part where `start` puts it, rendered)
    hint: str = "2d"
    scaffold: DragFieldConfig = field(default_factory=DragFieldConfig)  # the deformation field
    lr: DragLearningRates = field(default_factory=DragLearningRates)

    def __post_init__(self):
        if self.ring_k < 1 or self.lora_rank < 1:
            raise ConfigError(f"drag.ring_k and drag.lora_rank must be >= 1, got {self.ring_k}, {self.lora_rank}")
        if self.lambda_reg < 0 or self.depth_tolerance <= 0:
            raise ConfigError("drag.lambda_reg must be >= 0 and drag.depth_tolerance positive")
        if self.start not in ("source", "warp", "joint"):
            raise ConfigError(f"drag.start must be source, warp or joint, got {self.start!r}")
        if self.hint not in ("2d", "start"):
            raise ConfigError(f"drag.hint must be 2d or start, got {self.hint!r}")
        if self.hint == "start" and self.start == "source":
            raise ConfigError("drag.hint=start renders the part where drag.start puts it; set drag.start=warp or joint")
        if self.max_move is not None and self.max_move <= 0:
            raise ConfigError(f"drag.max_move must be positive (or null for unbounded), got {self.max_move}")
        if self.context is not None:
            EditRegion.parse(self.context)


@dataclass
class EditConfig:
    source: str = ""  # a `t3d fit` run, a captured-scene folder (fitted first) or a 3DGS point_cloud.ply (edited as is)
    prompt: str = ""  # what the edited region should show, e.g. "a blue cube"
    source_prompt: str = ""  # what it shows now (DDS), e.g. "a red cube"
    method: str = "dds"
    # Where the edit may act: box:cx,cy,cz,hx,hy,hz or sphere:cx,cy,cz,r (see region_frame), or view:NAME:MASK.png
    # (a 2D mask drawn on captured view NAME, lifted to the Gaussians it covers); None = the whole scene.
    region: Optional[str] = None
    region_frame: str = "scene"  # scene: the capture's own coordinates; normalised: the fit's unit frame
    prior: Optional[str] = None
    device: str = "auto"
    native: Optional[str] = None
    out: str = "outputs"
    export: list = field(default_factory=lambda: ["ply"])
    view_distance: float = 2.9  # edit cameras stand this many region radii from its centre (the prior's framing)
    lambda_preserve: float = 0.0  # L2 pull of the region's Gaussians toward their unedited values
    lr: EditLearningRates = field(default_factory=EditLearningRates)
    max_scale_growth: Optional[float] = 1.0  # edited Gaussians may shrink but grow at most this much; null = free
    # Learning-rate factor of the region's SH bands above 0 (its view-dependent colour), in [0, 1]. 0: they stay as
    # fitted. At 1, on fits with SH degree 3, per-view colour absorbed the edits' guidance and DDS failed the shape
    # edits (3/6 against 5/6 at 0; docs/benchmarks/editing.md, fourteenth session)
    sh_rest_lr_factor: float = 0.0
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            steps=300, resolution=32, cameras=CameraRange(elevation=[0.0, 45.0], radius=[1.0, 1.0], fovy=[40.0, 40.0])
        )
    )
    guidance: EditGuidanceConfig = field(default_factory=EditGuidanceConfig)
    in2n: In2NConfig = field(default_factory=In2NConfig)  # method in2n: its edit dataset and updates
    drag: DragEditConfig = field(default_factory=DragEditConfig)  # method drag: points, mask, scaffold, teacher

    # The fields that may name local files or folders (saved absolute: `resolve_paths`); `source` is made
    # absolute by the edit workflow, which reads it first.
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (
        "prior",
        "guidance.instruct_pix2pix",
        "drag.file",
        "drag.gaussian_mask",
        "drag.teacher",
    )

    def resolve_paths(self) -> None:
        """Relative paths to existing files in `PATH_FIELDS` and in a view:NAME:MASK region made absolute (called
        when a run starts, so it resumes from any folder)."""
        absolute_paths(self, self.PATH_FIELDS)
        if self.region is not None and self.region.startswith("view:"):
            self.region = absolute_view_masks(self.region)

    def __post_init__(self):
        EDIT_METHODS.get(self.method)  # one-line error naming the known methods
        if self.region_frame not in ("scene", "normalised"):
            raise ConfigError(f"region_frame must be scene or normalised, got {self.region_frame!r}")
        if self.region is not None:
            parse_view_mask(self.region) if self.region.startswith("view:") else EditRegion.parse(self.region)
        if self.view_distance <= 0 or self.lambda_preserve < 0:
            raise ConfigError("view_distance must be positive and lambda_preserve >= 0")
        if not 0.0 <= self.sh_rest_lr_factor <= 1.0:
            raise ConfigError(
                f"sh_rest_lr_factor must be in [0, 1] (0 keeps the fitted view-dependent colour), "
                f"got {self.sh_rest_lr_factor}"
            )
        dragging = bool(self.drag.points or self.drag.file or self.drag.gaussian_mask)
        if dragging and self.method != "drag":
            raise ConfigError(f"drag points and Gaussian masks are for --method drag (method is {self.method})")
        if self.drag.gaussian_mask and self.region is not None:
            raise ConfigError("give the dragged Gaussians once: a region (--mask box:/sphere:/view:) or a mask file")
        if self.guidance.instruct_pix2pix and self.method != "in2n":
            raise ConfigError(f"guidance.instruct_pix2pix is used by method in2n only (method is {self.method})")
