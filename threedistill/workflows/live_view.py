"""The live viewer (`--viewer` on generate, fit and edit): a viser server that shows the run's current splats
(Gaussians), surface (mesh) or occupied cells (NeRF, triplane) every N steps, the captured cameras of a scene,
and the loss curve. It only reads the model, under no_grad and without drawing random numbers, so a run's results
are bit-identical with and without it. It listens on 127.0.0.1 unless another host is asked for. viser is an
optional extra: `pip install 'threedistill[live]'`."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ThreeDistillError

EXTRA = "pip install 'threedistill[live]' (or pip install viser)"
MAX_POINTS = 200_000  # the most splats or cells sent per update (the strongest ones)


@dataclass
class LiveViewerOptions:
    port: int = 8080
    every: int = 10  # steps between scene updates (the loss curve gets every step)
    host: str = "127.0.0.1"

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ThreeDistillError(f"--viewer-port must be 0..65535, got {self.port}")
        if self.every < 1:
            raise ThreeDistillError(f"--viewer-every must be positive, got {self.every}")


class LiveViewer:
    """A viser server for one run: `show_cameras` once for a captured scene, `update(step, logs, model)` after
    every step (the trainer's `on_step`), `close` at the end."""

    def __init__(self, options: LiveViewerOptions, total_steps: int, log=print):
        try:
            import viser
        except ImportError:
            raise ThreeDistillError(f"--viewer needs viser, which is not installed: {EXTRA}") from None
        self.options, self.total, self.log = options, total_steps, log
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # viser prints a banner; the log line below says it
                self.server = viser.ViserServer(host=options.host, port=options.port, verbose=False)
        except OSError as err:
            raise ThreeDistillError(
                f"cannot start the viewer on {options.host}:{options.port}: {err.strerror or err}; "
                "pick another --viewer-port"
            ) from None
        self.server.scene.set_up_direction("+y")  # the toy world's and the normalised captures' up
        self.status = self.server.gui.add_markdown("starting")
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.plot = None
        self.scene_step: int | None = None
        log(f"live viewer: http://{options.host}:{self.port} (until the run ends)")

    @property
    def port(self) -> int:
        return self.server.get_port()

    def show_cameras(self, c2w: torch.Tensor, fovy: torch.Tensor, aspect: torch.Tensor) -> None:
        """Frustums of a scene's captured cameras (OpenGL camera-to-world matrices, normalised frame)."""
        flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=c2w.dtype))  # viser's cameras look down +z, y down
        for i in range(len(c2w)):
            rot = (c2w[i, :3, :3] @ flip).double().numpy()
            self.server.scene.add_camera_frustum(
                f"/cameras/{i:04d}",
                fov=float(fovy[i]),
                aspect=float(aspect[i]),
                scale=0.05,
                wxyz=_wxyz(rot),
                position=c2w[i, :3, 3].double().numpy(),
                color=(200, 120, 40),
            )

    def update(self, step: int, logs: dict, model) -> None:
        """Every step's loss; the scene and the loss curve every `every` steps, at the first and the last."""
        loss = logs.get("loss")
        if loss is not None:
            self.steps.append(float(step))
            self.losses.append(float(loss))
        if step % self.options.every == 0 or step == self.total or self.scene_step is None:
            self.show_model(model)
            self.scene_step = step
            if self.losses:
                self._plot()
        self.status.content = f"**step {step} / {self.total}**" + (f", loss {loss:.4f}" if loss is not None else "")

    def _plot(self) -> None:
        import viser.uplot as uplot

        data = (np.asarray(self.steps), np.asarray(self.losses))
        if self.plot is None:
            self.plot = self.server.gui.add_uplot(
                data=data,
                series=(uplot.Series(label="step"), uplot.Series(label="loss", stroke="red", width=2)),
                title="loss",
                aspect=1.5,
            )
        else:
            self.plot.data = data

    @torch.no_grad()
    def show_model(self, model) -> None:
        """The model as splats, a surface or occupied cells (no gradients, no random numbers)."""
        gaussians = current_gaussians(model)
        if gaussians is not None:
            self.server.scene.add_gaussian_splats("/model", **splat_arrays(gaussians))
        elif hasattr(model, "vertices") and hasattr(model, "faces"):
            self.server.scene.add_mesh_simple(
                "/model",
                vertices=model.vertices.detach().cpu().float().numpy(),
                faces=model.faces.detach().cpu().numpy().astype(np.uint32),
                color=(200, 200, 200),
            )
        else:
            points, colours = occupied_cells(model)
            self.server.scene.add_point_cloud("/model", points=points, colors=colours, point_size=0.03)

    def close(self) -> None:
        self.server.stop()


def current_gaussians(model):
    """The Gaussians a model shows now: its own, an edit's whole scene (a region edit's live Gaussians, a drag
    edit's Gaussians with the deformation written in), or None for other representations."""
    from ..export.fields import is_gaussians

    if hasattr(model, "baked"):  # a drag edit: the deformation lives beside the frozen scene
        return model.baked()
    if hasattr(model, "gaussians") and is_gaussians(model.gaussians):
        return model.gaussians
    return model if is_gaussians(model) else None


def splat_arrays(gaussians, limit: int = MAX_POINTS) -> dict:
    """viser's splat arrays (centres, covariances, rgbs, opacities) of the `limit` most opaque Gaussians."""
    from ..renderers.gaussian_raster import SH_C0, covariances

    opacities = gaussians.opacities.detach().cpu().float().reshape(-1)
    keep = opacities.argsort(descending=True)[:limit] if len(opacities) > limit else slice(None)
    means = gaussians.means.detach().cpu().float()[keep]
    cov = covariances(gaussians.scales.detach().cpu().float()[keep], gaussians.quats.detach().cpu().float()[keep])
    rgb = (SH_C0 * gaussians.sh.detach().cpu().float()[keep, 0] + 0.5).clamp(0, 1)
    return {
        "centers": means.numpy(),
        "covariances": cov.numpy(),
        "rgbs": rgb.numpy(),
        "opacities": opacities[keep].reshape(-1, 1).numpy(),
    }


def occupied_cells(model, resolution: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Centres and colours of the grid cells a density field (NeRF, triplane) makes more than half opaque."""
    from ..export.fields import field_grids, grid_points, grid_spacing

    grids = field_grids(model, resolution)
    alpha = 1 - torch.exp(-grids.field.clamp_min(0) * grid_spacing(resolution))
    inside = alpha > 0.5
    points = grid_points(resolution)[inside]
    colours = grids.colour.permute(1, 2, 3, 0)[inside].clamp(0, 1)
    if len(points) == 0:  # nothing opaque yet: an empty cloud draws nothing
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    return points.numpy().astype(np.float32), (colours.numpy() * 255).astype(np.uint8)


def _wxyz(rot: np.ndarray) -> np.ndarray:
    """A rotation matrix as a unit quaternion (w, x, y, z)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(rot).as_quat()
    return np.array([w, x, y, z])


def start_viewer(options: LiveViewerOptions | None, total_steps: int, scene=None, log=print) -> LiveViewer | None:
    """A live viewer for a run of `total_steps` (with the captured cameras of `scene`, a SceneData), or None
    when not asked for."""
    if options is None:
        return None
    viewer = LiveViewer(options, total_steps, log)
    if scene is not None:
        cameras = scene.cameras()
        viewer.show_cameras(cameras.c2w, cameras.fovy, scene.sizes[:, 0] / scene.sizes[:, 1])
    return viewer


@contextlib.contextmanager
def watching(options: LiveViewerOptions | None, total_steps: int, scene=None, log=print):
    """A live viewer (see `start_viewer`; None when `options` asks for none) for the `with` block, closed whatever
    happens in it."""
    live = start_viewer(options, total_steps, scene=scene, log=log)
    try:
        yield live
    finally:
        if live is not None:
            live.close()


def train_watched(session, trainer, model, *, viewer, scene, progress, stop_at, preview, log=print) -> bool:
    """`session.train(trainer, ...)` with a live viewer of `model` (with the captured cameras of `scene`) when
    `viewer` asks for one, closed whatever happens; True when the trainer reached its last step."""
    with watching(viewer, trainer.cfg.steps, scene=scene, log=log) as live:
        return session.train(trainer, progress=progress, stop_at=stop_at, preview=preview, on_step=on_step(live, model))


def on_step(viewer: LiveViewer | None, model):
    """The trainer's `on_step` callback that shows `model` in `viewer` (None without a viewer)."""
    return None if viewer is None else lambda step, logs: viewer.update(step, logs, model)
