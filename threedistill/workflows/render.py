"""`t3d render`: images and a video of any run (generate, fit or edit) from one of three camera sets:

- `captured`: the scene's own captured cameras (fit and edit runs; an edit renders in its source fit's scene), each
  view at its own aspect ratio and intrinsics, named after its image file, optionally beside its photo;
- `orbit`: a circle around the object (generate runs: the turntable's camera) or around the point the captured
  cameras look at, at their mean distance, elevation and field of view;
- `path`: a smooth path through the captured cameras in capture order (Catmull-Rom positions, slerped rotations,
  interpolated intrinsics).

Frames are rendered on the CPU in batches bounded by a pixel budget (a volume-rendered frame larger than its budget
in bands of rows, through the cameras' intrinsics: the same rays), written as PNGs, then as an mp4 (imageio-ffmpeg)
or, when ffmpeg fails, a GIF."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..cameras import Cameras, look_at
from ..errors import ConfigError, ThreeDistillError
from ..geometry import quat_to_rotmat, rotmat_to_quat
from ..scenes.views import Resolution
from ..session import read_run_kind

CAMERA_MODES = ("captured", "orbit", "path")
MIN_RESOLUTION, MAX_RESOLUTION = 8, 4096
DEFAULT_FRAMES = 48  # orbit and path frames (a path gets at least PATH_FRAMES_PER_VIEW per captured view)
PATH_FRAMES_PER_VIEW = 4
DEFAULT_FPS = 24.0
PIXEL_BUDGET = 1 << 18  # pixels per render call for rasterised models (Gaussians, meshes): frames per batch
RAY_BUDGET = 1 << 15  # rays per render call for volume rendering (NeRF, triplane: no ray chunking of their own)
TURNTABLE = {"elevation": 15.0, "radius": 2.9, "fovy": 40.0}  # generate runs' orbit: the turntable's cameras
# a scene without cameras (an edited 3DGS file): an orbit of square frames
SCENE_ORBIT_FALLBACK = {"elevation": 15.0, "radius": 3.0, "fovy": 40.0, "height": 256}


@dataclass
class RenderResult:
    """What `render_run` wrote: the frames (PNG paths, in order), the cameras and (H, W) of each, the captured view
    of each frame (captured mode), the video (None with video=False), side-by-side images and PSNR (compare)."""

    out_dir: Path
    cameras: str
    frames: list[Path]
    cams: Cameras
    sizes: list[tuple[int, int]]
    views: list[int] = field(default_factory=list)
    video: Path | None = None
    compare: list[Path] = field(default_factory=list)
    psnr: list[float] | None = None


def check_render_options(cameras: str | None, resolution: int | None, frames: int | None, fps: float) -> None:
    """One-line errors for option values, before anything is loaded."""
    if cameras is not None and cameras not in CAMERA_MODES:
        raise ConfigError(f"unknown --cameras {cameras!r}; valid: {', '.join(CAMERA_MODES)}")
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ConfigError(
            f"--resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels (the image height), "
            f"got {resolution}"
        )
    if frames is not None and frames < 1:
        raise ConfigError(f"--frames must be positive, got {frames}")
    if not (fps > 0 and math.isfinite(fps)):
        raise ConfigError(f"--fps must be positive, got {fps}")


def render_run(
    run_dir: str | Path,
    cameras: str | None = None,
    resolution: int | None = None,
    out: str | Path | None = None,
    frames: int | None = None,
    fps: float = DEFAULT_FPS,
    video: bool = True,
    compare: bool = False,
    progress: bool = True,
    log=print,
) -> RenderResult:
    """Render any run from `cameras` (captured, orbit or path; default: captured for fit and edit runs, orbit for
    generate runs) at `resolution` px height, each view keeping its aspect ratio (default: the size the fit trained
    each view at for fit and edit runs, the turntable's size for generate runs) into `out` (default
    RUN_DIR/render/<cameras>/): PNG frames, render.json and, unless `video` is False, video.mp4 (video.gif when
    ffmpeg fails). `frames`: the number of orbit or path frames, or of captured views to render (spread over the
    capture). `compare` (captured): each render beside its photo in compare/ and the PSNR against it."""
    from ..scenes import load_scene
    from .fit import FitConfig, eval_background
    from .loading import load_run, scene_source

    check_render_options(cameras, resolution, frames, fps)
    run_dir = Path(run_dir)
    kind = read_run_kind(run_dir)  # "not a run directory" before anything else
    mode = cameras or ("orbit" if kind == "generate" else "captured")
    if compare and mode != "captured":
        raise ConfigError(f"--compare needs --cameras captured (the photos belong to the captured views), not {mode}")
    if kind == "generate" and mode != "orbit":
        raise ThreeDistillError(
            f"{run_dir} is a generate run: it has no captured cameras for --cameras {mode}; use --cameras orbit"
        )
    run = load_run(run_dir)
    scene, views, names, background = None, [], [], None
    if kind == "generate":
        from .generate import output_resolution

        height = resolution or output_resolution(run)
        n = frames or DEFAULT_FRAMES
        cams = orbit_around(torch.zeros(3), n, TURNTABLE["elevation"], TURNTABLE["radius"], TURNTABLE["fovy"])
        sizes = [(height, height)] * n
    else:
        fit_cfg, scene_path = scene_source(run)
        fit_cfg = fit_cfg or FitConfig()  # an edited 3DGS file: the default fit's sizes
        scene = load_scene(scene_path)
        rule = Resolution(height=resolution) if resolution else fit_cfg.resolution_rule()
        background = eval_background(fit_cfg)  # the fit's own background (black for a black fit, else white)
        if mode != "orbit" and not len(scene.image_paths):
            raise ThreeDistillError(
                f"{run_dir}: its scene {scene_path} has no captured cameras for --cameras {mode}; use --cameras orbit"
            )
        cams, sizes, views = scene_cameras_for(scene, mode, rule, frames)
        height = sizes[0][0]
    if mode == "captured":
        names = view_names(scene, views)
    else:
        digits = max(4, len(str(len(cams) - 1)))
        names = [f"frame_{i:0{digits}d}" for i in range(len(cams))]

    out_dir = Path(out) if out else run_dir / "render" / mode
    if out_dir.exists() and not out_dir.is_dir():
        raise ThreeDistillError(f"--out {out_dir} is a file; give a folder for the frames")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_frames(out_dir, names)
    budget, bands = render_budget(run.model)
    log(f"rendering {len(cams)} {mode} frames of {run_dir} ({sizes[0][1]}x{sizes[0][0]} px) into {out_dir}")
    result = RenderResult(out_dir, mode, [], cams, sizes, views)
    photos_psnr = []
    from tqdm import tqdm

    from ..utils.images import save_image

    bar = tqdm(total=len(cams), desc=f"rendering {mode}", unit="frame", disable=not progress)
    try:
        for i, rgb in render_frames(run.model, cams, sizes, budget, bands, background):
            path = save_image(rgb, out_dir / f"{names[i]}.png")
            result.frames.append(path)
            if compare:
                photo = captured_photo(scene, views[i], sizes[i], background)
                photos_psnr.append(psnr(rgb, photo))
                gap = torch.ones(3, sizes[i][0], 2)
                result.compare.append(save_image(torch.cat([rgb, gap, photo], -1), out_dir / "compare" / path.name))
            bar.update(1)
    finally:
        bar.close()
    if compare:
        result.psnr = photos_psnr
        log(f"PSNR against the photos: mean {np.mean(photos_psnr):.2f} dB, worst {min(photos_psnr):.2f} dB")
    if video:
        result.video = write_video(result.frames, out_dir / "video.mp4", fps, log)
    manifest = {
        "run": str(run_dir),
        "kind": kind,
        "cameras": mode,
        "height": height,
        "fps": fps,
        "frames": [p.name for p in result.frames],
        "video": result.video.name if result.video else None,
    }
    if mode == "captured":
        manifest["views"] = [scene.image_paths[v].name for v in views]
        manifest["sizes"] = [list(size) for size in sizes]  # (H, W) of each view
    if result.psnr is not None:
        manifest["psnr"] = [round(v, 2) for v in result.psnr]
    (out_dir / "render.json").write_text(json.dumps(manifest, indent=2))
    return result


# ---------------------------------------------------------------- cameras
def capture_order(scene) -> list[int]:
    """The scene's views in capture order: by image path, numbers compared as numbers (frame_2 before frame_10)."""
    key = lambda i: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", scene.image_paths[i].as_posix())]  # noqa: E731
    return sorted(range(len(scene.image_paths)), key=key)


def spread(items: list, n: int | None) -> list:
    """`n` items spread evenly over `items` (first and last included); all of them when n is None or too large."""
    if n is None or n >= len(items):
        return list(items)
    if n == 1:
        return [items[0]]
    return [items[round(j * (len(items) - 1) / (n - 1))] for j in range(n)]


def scene_cameras_for(scene, mode: str, rule: Resolution, frames: int | None):
    """(cameras, (H, W) per frame, captured view per frame or []) of a fit or edit run's scene in `mode`, each
    captured view at the size `rule` gives it; orbit and path frames at the first captured view's size."""
    order = capture_order(scene)
    if mode == "captured":
        views = spread(order, frames)
        return scene.cameras(views), [rule.size(scene, v) for v in views], views
    if order:
        size = rule.size(scene, order[0])
    else:  # a 3DGS file without cameras: square frames
        size = (rule.height or SCENE_ORBIT_FALLBACK["height"],) * 2
    if mode == "orbit":
        cams = scene_orbit(scene, frames or DEFAULT_FRAMES)
    else:
        if len(order) < 2:
            raise ThreeDistillError(f"--cameras path needs at least 2 captured views; the scene has {len(order)}")
        cams = path_cameras(scene.cameras(order), frames or max(DEFAULT_FRAMES, PATH_FRAMES_PER_VIEW * len(order)))
    return cams, [size] * len(cams), []


def orbit_around(centre: torch.Tensor, n: int, elevation: float, radius: float, fovy: float, start: float = 0.0):
    """n cameras evenly around a vertical (+Y) circle about `centre` looking at it, from azimuth `start` (degrees;
    0 = on the +Z side) on, at `elevation` degrees, distance `radius` and vertical field of view `fovy` degrees."""
    az = start + torch.linspace(0.0, 360.0, n + 1)[:-1]
    el = torch.full((n,), float(elevation))
    az_r, el_r = torch.deg2rad(az), torch.deg2rad(el)
    direction = torch.stack([torch.cos(el_r) * torch.sin(az_r), torch.sin(el_r), torch.cos(el_r) * torch.cos(az_r)], -1)
    centre = centre.float().expand(n, 3)
    c2w = look_at(centre + float(radius) * direction, centre)
    return Cameras(c2w, torch.deg2rad(torch.full((n,), float(fovy))), az, el, torch.full((n,), float(radius)))


def scene_orbit(scene, n: int) -> Cameras:
    """An orbit around the point the captured cameras look at (normalised frame: +Y is the mean camera up), at their
    mean distance, elevation and vertical field of view, starting at the first captured view's azimuth."""
    from ..scenes.base import fovy_from
    from ..scenes.normalize import look_centre

    if not len(scene.c2w):
        f = SCENE_ORBIT_FALLBACK
        return orbit_around(torch.zeros(3), n, f["elevation"], f["radius"], f["fovy"])
    centre = torch.from_numpy(look_centre(scene.c2w.double().numpy())).float()
    offsets = scene.c2w[:, :3, 3].float() - centre
    distance = offsets.norm(dim=-1).clamp_min(1e-9)
    elevation = float(torch.rad2deg(torch.asin((offsets[:, 1] / distance).clamp(-1, 1))).mean())
    first = offsets[capture_order(scene)[0]] if scene.image_paths else offsets[0]
    start = math.degrees(math.atan2(float(first[0]), float(first[2])))
    fovy = float(torch.rad2deg(fovy_from(scene.intrinsics.float())).mean())
    return orbit_around(centre, n, elevation, float(distance.mean()), fovy, start)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of unit quaternions (M,4) at fractions t (M,), along the shorter arc."""
    dot = (q0 * q1).sum(-1)
    q1 = torch.where(dot[:, None] < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    s = torch.sin(theta)
    close = s < 1e-6
    w0 = torch.where(close, 1 - t, torch.sin((1 - t) * theta) / s.clamp_min(1e-12))
    w1 = torch.where(close, t, torch.sin(t * theta) / s.clamp_min(1e-12))
    return torch.nn.functional.normalize(w0[:, None] * q0 + w1[:, None] * q1, dim=-1)


def path_cameras(cams: Cameras, n: int) -> Cameras:
    """n cameras along a smooth path through `cams` (in the given order), from the first to the last: positions on
    a Catmull-Rom spline through the camera centres, rotations slerped between consecutive cameras, intrinsics
    interpolated linearly. Frames are spaced by distance travelled plus angle turned, so speed is even."""
    from ..scenes.base import fovy_from

    k = len(cams)
    pos, rot = cams.c2w[:, :3, 3].double(), cams.c2w[:, :3, :3].double()
    quats = torch.from_numpy(np.stack([rotmat_to_quat(r) for r in rot.numpy()]))
    for i in range(1, k):  # one hemisphere, so consecutive cameras interpolate along the short arc
        if float(quats[i] @ quats[i - 1]) < 0:
            quats[i] = -quats[i]
    moved = (pos[1:] - pos[:-1]).norm(dim=-1)
    turned = 2 * torch.acos((quats[1:] * quats[:-1]).sum(-1).abs().clamp(max=1.0))
    lengths = torch.full((k - 1,), 1e-9, dtype=torch.float64)
    for part in (moved, turned):
        if float(part.sum()) > 1e-12:
            lengths = lengths + part / part.sum()
    knots = torch.cat([torch.zeros(1, dtype=torch.float64), lengths.cumsum(0)])
    u = torch.linspace(0.0, 1.0, n, dtype=torch.float64) * knots[-1] if n > 1 else torch.zeros(1, dtype=torch.float64)
    seg = (torch.searchsorted(knots, u, right=True) - 1).clamp(0, k - 2)
    t = ((u - knots[seg]) / (knots[seg + 1] - knots[seg])).clamp(0.0, 1.0)
    p0, p1, p2, p3 = (pos[(seg + d).clamp(0, k - 1)] for d in (-1, 0, 1, 2))
    tt = t[:, None]
    position = 0.5 * (
        2 * p1 + (p2 - p0) * tt + (2 * p0 - 5 * p1 + 4 * p2 - p3) * tt**2 + (3 * p1 - p0 - 3 * p2 + p3) * tt**3
    )
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, :3, :3] = quat_to_rotmat(slerp(quats[seg], quats[seg + 1], t))
    c2w[:, :3, 3] = position
    c2w = c2w.float()
    if cams.intrinsics is not None:
        intrinsics = torch.lerp(cams.intrinsics[seg].double(), cams.intrinsics[seg + 1].double(), tt).float()
        fovy = fovy_from(intrinsics)
    else:
        intrinsics, fovy = None, torch.lerp(cams.fovy[seg].double(), cams.fovy[seg + 1].double(), t).float()
    radius = c2w[:, :3, 3].norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((c2w[:, 1, 3] / radius.clamp_min(1e-12)).clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(c2w[:, 0, 3], c2w[:, 2, 3]))
    return Cameras(c2w, fovy, azimuth, elevation, radius, intrinsics)


def view_names(scene, views: list[int]) -> list[str]:
    """File names (without suffix) of captured views' renders: the image file's stem, made unique."""
    names, seen = [], set()
    for v in views:
        name = Path(scene.image_paths[v]).stem or f"view_{v}"
        if name in seen:
            name = f"{name}_{v}"
        seen.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- rendering
def render_budget(model) -> tuple[int, bool]:
    """(pixels per render call, whether a larger frame may be rendered in bands of rows). Volume rendering holds
    every sample of every ray at once, so it gets fewer pixels, and its rays are the same in a band. A rasteriser's
    frame is rendered whole: the Gaussians' projection depends on the image's extent (3DGS's frustum clamp)."""
    from ..representations.nerf import RadianceField

    return (RAY_BUDGET, True) if isinstance(model, RadianceField) else (PIXEL_BUDGET, False)


def band_cameras(cams: Cameras, height: int, width: int, top: int, rows: int) -> Cameras:
    """Cameras whose `rows`-row images are rows top..top+rows of `cams`' height x width images (same pixels)."""
    from ..cameras import pixel_intrinsics

    fx, fy, cx, cy = pixel_intrinsics(cams, height, width)
    intrinsics = torch.stack([fx / width, fy / rows, cx / width, (cy - top) / rows], -1)
    return Cameras(cams.c2w, cams.fovy, cams.azimuth, cams.elevation, cams.radius, intrinsics)


@torch.no_grad()
def render_image(
    model,
    cams: Cameras,
    height: int,
    width: int,
    budget: int = PIXEL_BUDGET,
    bands: bool = False,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """RGB (B,3,H,W) in [0,1] of `cams`, at most `budget` pixels per render call: several cameras per call, or, with
    `bands`, one camera's image in bands of rows when it alone is larger (else that image in one call). The
    model's own background unless `background` (3,) is given."""
    extra = {} if background is None else {"background": background}

    def draw(c: Cameras, h: int) -> torch.Tensor:
        return model.render(c, h, width, geometry=False, perturb=False, **extra)["rgb"].cpu()

    rows = max(1, min(height, budget // max(1, width)))
    if rows >= height or not bands:
        per_call = max(1, budget // (height * width))
        return torch.cat([draw(cams[i : i + per_call], height) for i in range(0, len(cams), per_call)]).clamp(0, 1)
    out = []
    for i in range(len(cams)):
        parts = [
            draw(band_cameras(cams[i], height, width, top, min(rows, height - top)), min(rows, height - top))
            for top in range(0, height, rows)
        ]
        out.append(torch.cat(parts, -2))
    return torch.cat(out).clamp(0, 1)


def render_frames(
    model,
    cams: Cameras,
    sizes: list[tuple[int, int]],
    budget: int,
    bands: bool = False,
    background: torch.Tensor | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, RGB (3,H,W)) of every frame in order, rendered in batches of equal size within `budget` pixels."""
    i = 0
    while i < len(cams):
        h, w = sizes[i]
        n = max(1, budget // (h * w))
        j = i + 1
        while j < len(cams) and j - i < n and sizes[j] == sizes[i]:
            j += 1
        for k, rgb in enumerate(render_image(model, cams[i:j], h, w, budget, bands, background)):
            yield i + k, rgb
        i = j


def captured_photo(scene, view: int, size: tuple[int, int], background: torch.Tensor | None) -> torch.Tensor:
    """View `view`'s photo (3,H,W) at `size`, composited on the background outside its mask (as fits train)."""
    image, mask = scene.load_images([view], *size)
    if mask is None:
        return image[0]
    bg = torch.ones(3) if background is None else background
    return (image * mask + bg[None, :, None, None] * (1 - mask))[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean().clamp_min(1e-10)))


# ---------------------------------------------------------------- files
def remove_stale_frames(out_dir: Path, names: list[str]) -> None:
    """Numbered frames of an earlier render into the same folder that this one will not overwrite."""
    keep = {f"{n}.png" for n in names}
    for path in out_dir.glob("frame_*.png"):
        if re.fullmatch(r"frame_\d+\.png", path.name) and path.name not in keep:
            path.unlink()


def read_frames(paths: list[Path]) -> Iterator[np.ndarray]:
    """The frames as (H,W,3) uint8, padded with white to one size with even sides (as H.264 needs), centred."""
    import imageio.v3 as iio

    shapes = [iio.improps(p).shape[:2] for p in paths]
    height = max(h for h, _ in shapes) + max(h for h, _ in shapes) % 2
    width = max(w for _, w in shapes) + max(w for _, w in shapes) % 2
    for path in paths:
        image = np.asarray(iio.imread(path))[..., :3]
        if image.shape[:2] != (height, width):
            canvas = np.full((height, width, 3), 255, dtype=np.uint8)
            top, left = (height - image.shape[0]) // 2, (width - image.shape[1]) // 2
            canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
            image = canvas
        yield image


def write_mp4(paths: list[Path], path: Path, fps: float) -> Path:
    """An H.264 mp4 of the frames through imageio-ffmpeg."""
    import imageio.v2 as iio2

    writer = iio2.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error"
    )
    try:
        for frame in read_frames(paths):
            writer.append_data(frame)
    finally:
        writer.close()
    return path


def write_gif(paths: list[Path], path: Path, fps: float) -> Path:
    import imageio.v3 as iio

    iio.imwrite(path, list(read_frames(paths)), duration=1000.0 / fps, loop=0)
    return path


def write_video(paths: list[Path], path: Path, fps: float, log=print) -> Path:
    """`path` (an mp4), or a GIF beside it with a one-line warning when ffmpeg fails; the other format's file from
    an earlier render is removed."""
    gif = path.with_suffix(".gif")
    try:
        written = write_mp4(paths, path, fps)
        gif.unlink(missing_ok=True)
        return written
    except Exception as err:  # no ffmpeg binary, a codec it lacks, a broken pipe: the frames make a GIF instead
        path.unlink(missing_ok=True)
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        log(f"warning: no mp4 video (ffmpeg failed: {reason}); writing {gif.name} instead")
        return write_gif(paths, gif, fps)


__all__ = ["CAMERA_MODES", "RenderResult", "render_run", "orbit_around", "path_cameras", "scene_orbit"]
