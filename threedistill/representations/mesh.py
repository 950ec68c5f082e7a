"""A triangle mesh for text-to-3D refinement (Magic3D's fine stage): a fixed topology whose vertices move by learned
per-vertex offsets, coloured by a hash-grid texture field queried at surface points, drawn by the differentiable
rasterizer in renderers/mesh_soft, and kept smooth by Laplacian and normal-consistency regularisers. With
shading "lambert" the field is an albedo lit by the toy world's light rig through smooth vertex normals, so the
prior's shading cues move the surface everywhere, not only at the silhouette (Fantasia3D's and Magic3D's shaded
geometry stage)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import trimesh
from torch import nn

from ..cameras import Cameras
from ..config import check_schedules
from ..errors import ConfigError
from ..lighting import light_intensity
from ..renderers.mesh_soft import edge_adjacency, rasterize_mesh_soft
from ..renderers.volume import BOUND
from .base import Representation
from .hash_grid import make_encoding

SHADINGS = ("albedo", "lambert")
SOFT_MARGIN = 3.0  # soft coverage reaches this many sigmas beyond a triangle's screen bounding box


@dataclass
class MeshConfig:
    subdivisions: int = 3  # the initial icosphere (3: 642 vertices, 1280 faces)
    init_radius: float = 0.5
    levels: int = 8  # texture field: hash grid and MLP
    log2_table_size: int = 14
    base_resolution: int = 8
    max_resolution: int = 128
    hidden: int = 32
    lr_vertices: Any = 1e-3  # learning rates: a number or a schedule [k0, v0, v1, k1]
    lr_texture: Any = 1e-2
    lr_mlp: Any = 1e-3
    sigma: float = 0.25  # antialiasing width in pixels (0.5 lightened rims: colour error 0.12 vs 0.10 after hand-over)
    lambda_laplacian: float = 1.0
    lambda_normal_consistency: float = 0.1
    handover_faces: int = 5000  # face budget of the surface a mesh stage takes over from a coarse stage
    # albedo: the texture field is the colour seen; lambert: it is an albedo lit by the embedded prior's light
    # rig (toyworld.render's fixed lights), exports bake that light in as coarse stages' colours have it
    shading: str = "albedo"
    # Laplacian-preconditioned vertex updates ("large steps", Nicolet et al. 2021): the learned parameter w gives
    # offsets = (I + large_steps * L)^-1 w (L the uniform graph Laplacian), so a step moves a smooth patch of
    # surface instead of single vertices and larger vertex learning rates do not crumple it; w is stepped by
    # uniform Adam (utils.optim), as in the paper; 0: plain offsets
    large_steps: float = 0.0

    def __post_init__(self):
        _require(
            isinstance(self.subdivisions, int) and 0 <= self.subdivisions <= 6,
            "subdivisions",
            "an integer 0..6",
            self.subdivisions,
        )
        _require(
            0 < self.init_radius < BOUND, "init_radius", f"in (0, {BOUND:g}) (inside the world bound)", self.init_radius
        )
        for name in ("levels", "base_resolution", "hidden"):
            _require(
                isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                name,
                "a positive integer",
                getattr(self, name),
            )
        _require(
            isinstance(self.log2_table_size, int) and 4 <= self.log2_table_size <= 24,
            "log2_table_size",
            "an integer 4..24",
            self.log2_table_size,
        )
        _require(
            self.max_resolution >= self.base_resolution,
            "max_resolution",
            "at least base_resolution",
            self.max_resolution,
        )
        _require(self.sigma > 0, "sigma", "a positive number of pixels", self.sigma)
        for name in ("lambda_laplacian", "lambda_normal_consistency"):
            _require(getattr(self, name) >= 0, name, "zero or positive", getattr(self, name))
        _require(
            isinstance(self.handover_faces, int) and self.handover_faces >= 4,
            "handover_faces",
            "an integer of at least 4",
            self.handover_faces,
        )
        _require(self.shading in SHADINGS, "shading", " or ".join(SHADINGS), self.shading)
        _require(
            self.large_steps >= 0,
            "large_steps",
            "zero (plain offsets) or a positive smoothing weight",
            self.large_steps,
        )
        check_schedules(self, "mesh", ("lr_vertices", "lr_texture", "lr_mlp"))


def _require(ok: bool, name: str, expected: str, value) -> None:
    """Raise a one-line ConfigError naming the field unless `ok`."""
    if not ok:
        raise ConfigError(f"mesh.{name} must be {expected}, got {value!r}")


class Mesh(Representation):
    config_class = MeshConfig

    def __init__(
        self,
        cfg: MeshConfig | None = None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        self.cfg = cfg = cfg or MeshConfig()
        if generator is not None:  # the MLP draws its initial weights from the global generator, as NeRF's does
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        self.encoding = make_encoding(
            torch.device(device),
            levels=cfg.levels,
            log2_table_size=cfg.log2_table_size,
            base_resolution=cfg.base_resolution,
            max_resolution=cfg.max_resolution,
        )
        self.colour_net = nn.Sequential(
            nn.Linear(self.encoding.output_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 3)
        )
        sphere = trimesh.creation.icosphere(subdivisions=cfg.subdivisions, radius=cfg.init_radius)
        self.set_mesh(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces, dtype=torch.long))
        self.to(device)  # initialised on the CPU (same values on any device), then moved

    @property
    def device(self) -> torch.device:
        return self.colour_net[0].weight.device

    @property
    def vertices(self) -> torch.Tensor:
        """Current vertex positions (V,3): the base mesh plus the learned offsets (smoothed by the large-steps
        system when large_steps > 0)."""
        if self._smoothing is None:
            return self.base_vertices + self.offsets
        return self.base_vertices + _SparseSolve.apply(self.offsets, self._smoothing)

    def set_mesh(self, vertices: torch.Tensor, faces: torch.Tensor) -> None:
        """Replace the topology: `vertices` (V,3) become the base, offsets restart at zero. Parameters are new
        tensors, so an optimizer made before this call must be made again."""
        dev = self.device
        self.register_buffer("base_vertices", vertices.detach().to(dev, torch.float32).clone())
        self.register_buffer("faces", faces.detach().to(dev, torch.long).clone())
        self.offsets = nn.Parameter(torch.zeros_like(self.base_vertices))
        edges, edge_faces = edge_adjacency(self.faces)
        adjacent = edge_faces[(edge_faces >= 0).all(-1)]  # pairs of faces sharing an edge
        degree = torch.bincount(edges.flatten(), minlength=len(vertices)).float()
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("adjacent_faces", adjacent, persistent=False)
        self.register_buffer("degree", degree, persistent=False)
        self._smoothing = LargeStepsSystem(edges, len(vertices), self.cfg.large_steps) if self.cfg.large_steps else None

    def param_groups(self) -> list[dict]:
        c = self.cfg
        return [
            {"params": [self.offsets], "lr": c.lr_vertices, "name": "vertices", "uniform": c.large_steps > 0},
            {"params": list(self.encoding.parameters()), "lr": c.lr_texture, "name": "texture"},
            {"params": list(self.colour_net.parameters()), "lr": c.lr_mlp, "name": "mlp"},
        ]

    def colour_at(self, points: torch.Tensor) -> torch.Tensor:
        """Texture-field colours (N,3) in [0,1] at world points (N,3), returned on the points' device."""
        x = (points.to(self.device) / BOUND + 1.0) * 0.5
        return torch.sigmoid(self.colour_net(self.encoding(x))).to(points.device)

    def surface_colour(self, points: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """The colour seen (N,3) at surface points with outward unit normals (N,3): the texture field, lit when
        shading is lambert."""
        colour = self.colour_at(points)
        return colour * light_intensity(normals.to(colour)) if self.cfg.shading == "lambert" else colour

    def render(
        self,
        cameras: Cameras,
        height: int,
        width: int,
        *,
        background: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        geometry: bool = False,
        perturb: bool = True,
    ) -> dict:
        """rgb, alpha (soft), depth (view depth, 0 off the mesh) and normal (world, 0 off the mesh), (B,C,H,W).
        Rasterization is deterministic and cheap, so depth and normal always come and `generator`, `geometry`
        and `perturb` are accepted and ignored."""
        vertices = self.vertices  # once per render: with large steps each read is a sparse solve
        raster = rasterize_mesh_soft(
            vertices, self.faces, cameras.to(self.device), height, width, self.cfg.sigma, SOFT_MARGIN
        )
        bg = torch.ones(3, device=self.device) if background is None else background.to(self.device)
        fringe = math.ceil(SOFT_MARGIN * self.cfg.sigma) + 1
        light = self._pixel_light(raster, cameras, vertices) if self.cfg.shading == "lambert" else None
        rgb = shade(raster, self.colour_at, bg, fringe, light)
        return {"rgb": rgb, "alpha": raster["alpha"], "depth": raster["depth"], "normal": raster["normal"]}

    def _pixel_light(self, raster: dict, cameras: Cameras, vertices: torch.Tensor) -> torch.Tensor:
        """Light (N,1) at the covered pixels (in `covered.nonzero()` order): smooth normals interpolated from the
        rasterized `vertices`, turned to the side of the surface that faces the camera."""
        idx = (raster["face"] >= 0).nonzero(as_tuple=True)
        face = raster["face"][idx]
        normals = (raster["bary"][idx][..., None] * vertex_normals(vertices, self.faces)[self.faces[face]]).sum(1)
        to_camera = cameras.positions.to(self.device)[idx[0]] - raster["points"][idx]
        facing = (raster["normal"].permute(0, 2, 3, 1)[idx] * to_camera).sum(-1, keepdim=True).detach()
        return light_intensity(F.normalize(torch.where(facing < 0, -normals, normals), dim=-1))

    def loss_weights(self) -> dict[str, float]:
        return {"laplacian": self.cfg.lambda_laplacian, "normal_consistency": self.cfg.lambda_normal_consistency}

    def training_losses(
        self, out: dict | None = None, weights: dict[str, float] | None = None
    ) -> dict[str, torch.Tensor]:
        """Unweighted smoothness terms: loss_laplacian (uniform Laplacian) and loss_normal_consistency (adjacent
        faces' normals); a term is left out when its weight (default: the mesh config's lambda) is 0."""
        weights, out = self.loss_weights() if weights is None else weights, {}
        v = self.vertices
        if weights.get("laplacian"):
            out["loss_laplacian"] = laplacian_loss(v, self.edges, self.degree)
        if weights.get("normal_consistency"):
            out["loss_normal_consistency"] = normal_consistency_loss(v, self.faces, self.adjacent_faces)
        return out

    def fit_texture(
        self, points: torch.Tensor, colours: torch.Tensor, normals: torch.Tensor, steps: int = 200, lr: float = 1e-2
    ) -> float:
        """Regress the seen colour (surface_colour) to `colours` (N,3) at surface `points` (N,3) with outward
        `normals` (N,3) (full-batch Adam on the MSE, so no random numbers are drawn); returns the final RMS error."""
        x, y, n = (t.detach().to(self.device, torch.float32) for t in (points, colours, normals))
        params = list(self.encoding.parameters()) + list(self.colour_net.parameters())
        optimizer = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                F.mse_loss(self.surface_colour(x, n), y).backward()
                optimizer.step()
        for p in params:
            p.grad = None
        with torch.no_grad():
            return float((self.surface_colour(x, n) - y).square().mean().sqrt())

    def load_tensors(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from a state dict whose vertex and face counts may differ from the current ones."""
        self.set_mesh(state["base_vertices"], state["faces"])
        self.load_state_dict({k: v.to(self.device) for k, v in state.items()})

    @torch.no_grad()
    def export_mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vertices (V,3) float32, faces (F,3) int64 and vertex colours (V,3) in [0,1] (lit when shading is
        lambert, normals from the winding), as numpy arrays."""
        v = self.vertices.detach()
        return (
            v.cpu().numpy().astype(np.float32),
            self.faces.cpu().numpy().astype(np.int64),
            self.surface_colour(v, vertex_normals(v, self.faces)).clamp(0, 1).cpu().numpy(),
        )


def shade(
    raster: dict[str, torch.Tensor],
    colour_fn: Callable[[torch.Tensor], torch.Tensor],
    background: torch.Tensor,
    fringe: int,
    light: torch.Tensor | None = None,
) -> torch.Tensor:
    """rgb (B,3,H,W) = alpha * surface colour + (1 - alpha) * background. Covered pixels take colour_fn at their
    surface point, times `light` (N,1) per covered pixel in `covered.nonzero()` order when given. The soft fringe
    outside the silhouette takes the colour of the covered pixels next to it (spread `fringe` pixels outward), so
    growing the silhouette shows the object's own colour there and rgb losses give silhouette gradients; any
    pixel still unfilled takes the view's mean surface colour (grey for a view with no covered pixel).
    `background` is (3,) or (B,3)."""
    covered = raster["face"] >= 0
    idx = covered.nonzero(as_tuple=True)
    points = raster["points"]
    b, h, w, _ = points.shape
    colours = colour_fn(points[idx]).to(points.dtype)
    surface = points.new_zeros(b, h, w, 3).index_put(idx, colours if light is None else colours * light)
    surface, filled = _dilate(surface.permute(0, 3, 1, 2), covered[:, None].to(points.dtype), fringe)
    count = covered.sum((1, 2)).to(points.dtype)[:, None, None, None]
    mean = (surface * filled).sum((2, 3), keepdim=True) / count.clamp_min(1)
    fallback = torch.where(count > 0, mean, torch.full_like(mean, 0.5))
    surface = torch.where(filled > 0, surface, fallback)
    alpha = raster["alpha"]
    bg = background.to(points.device, points.dtype).reshape(-1, 3, 1, 1)
    return alpha * surface + (1 - alpha) * bg


def _dilate(image: torch.Tensor, filled: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grow the filled region of image (B,C,H,W) by one pixel per step, each new pixel the mean of its filled
    3x3 neighbours; returns the image and the new mask (B,1,H,W)."""
    c = image.shape[1]
    kernel = image.new_ones(1, 1, 3, 3)
    for _ in range(steps):
        count = F.conv2d(filled, kernel, padding=1)
        sums = F.conv2d(image * filled, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
        grow = (filled == 0) & (count > 0)
        image = torch.where(grow, sums / count.clamp_min(1), image)
        filled = torch.where(grow, torch.ones_like(filled), filled)
    return image, filled


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals (V,3): the area-weighted sum of the adjacent faces' winding normals (0 for unused
    vertices); differentiable in the vertices."""
    v = vertices[faces]
    area_normals = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    sums = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), area_normals.repeat_interleave(3, 0))
    return F.normalize(sums, dim=-1, eps=1e-20)


class LargeStepsSystem:
    """I + weight * L, L = D - A the uniform graph Laplacian of a mesh's `edges` (E,2): the system whose solution
    turns large-steps parameters into vertex offsets. Symmetric positive definite, so one sparse LU factor (scipy,
    built on first use and again after a copy or unpickling) serves the forward and the backward solve."""

    def __init__(self, edges: torch.Tensor, n_vertices: int, weight: float):
        self.edges, self.n_vertices, self.weight = edges.cpu().numpy(), n_vertices, weight
        self._factor = None

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        if self._factor is None:
            from scipy.sparse import coo_matrix, identity
            from scipy.sparse.linalg import splu

            n, e = self.n_vertices, self.edges
            rows, cols = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
            adjacency = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
            degree = coo_matrix((np.asarray(adjacency.sum(1)).ravel(), (np.arange(n), np.arange(n))), shape=(n, n))
            self._factor = splu((identity(n) + self.weight * (degree - adjacency)).tocsc())
        return torch.from_numpy(self._factor.solve(rhs.detach().cpu().double().numpy())).to(rhs)

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_factor": None}  # scipy's factor does not pickle; it is rebuilt on use


class _SparseSolve(torch.autograd.Function):
    """x = M^-1 b for the symmetric large-steps system M; the gradient is M^-1 grad."""

    @staticmethod
    def forward(ctx, rhs: torch.Tensor, system: LargeStepsSystem) -> torch.Tensor:
        ctx.system = system
        return system.solve(rhs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.system.solve(grad), None


def laplacian_loss(vertices: torch.Tensor, edges: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """Mean squared norm of the uniform Laplacian: each vertex minus the mean of its neighbours."""
    both = torch.cat([edges, edges.flip(-1)])
    sums = torch.zeros_like(vertices).index_add(0, both[:, 0], vertices[both[:, 1]])
    lap = (vertices - sums / degree.clamp_min(1)[:, None]) * (degree > 0)[:, None]  # unused vertices: 0
    return lap.square().sum(-1).mean()


def normal_consistency_loss(vertices: torch.Tensor, faces: torch.Tensor, adjacent: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos between the normals of faces sharing an edge (0 for no adjacent faces)."""
    if len(adjacent) == 0:
        return vertices.sum() * 0
    v = vertices[faces]
    n = F.normalize(torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1), dim=-1, eps=1e-12)
    return (1 - (n[adjacent[:, 0]] * n[adjacent[:, 1]]).sum(-1)).mean()
