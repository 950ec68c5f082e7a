"""A corpus of bad (and a few awkward but valid) inputs for every reader, config path and command, as a careless or
hostile user would give them: corrupted 3DGS .ply files, transforms.json, COLMAP text and binary models, LLFF
poses, `key=value` overrides and CLI options, output paths, damaged run folders.

Each `Case` builds its input from a small set of valid fixtures (`build_fixtures`: a toy capture, a splat file, a
finished generate run and a finished fit run) and says what must happen: `error` (exit 2 with one line
`error: ...`, or click's own usage error, naming `fragment` when given) or `ok` (exit 0). A traceback, a crash,
an exit 0 for an `error` case or an error for an `ok` case is a failure. `t3d bench fuzz` runs every case as its
own process (timeouts, signals); the test suite runs them in-process (tests/test_fuzz.py)."""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

FIT_TAIL = ["trainer.steps=1", "max_side=32", "background_points=16", "export=[]"]
GEN_TAIL = ["trainer.steps=1", "trainer.resolution=16", "export=[]"]
EDIT_TAIL = ["trainer.steps=1", "trainer.resolution=16", "export=[]"]
PROMPT = "a red cone"


@dataclass
class Fixtures:
    """Valid inputs every case starts from (built once by `build_fixtures`, never modified by a case)."""

    root: Path
    scene: Path  # toy capture: transforms.json + images/ + sparse/0 (COLMAP text)
    ply: Path  # a 3DGS point_cloud.ply of a few hundred Gaussians
    run: Path  # a finished generate run (Gaussians)
    fit_run: Path  # a finished fit run


@dataclass
class Case:
    name: str  # group/what
    make: Callable[[Path, Fixtures], list[str]]  # builds the input in a fresh folder, returns the t3d argv
    expect: str = "error"  # error | ok
    fragment: str = ""  # a piece of the one-line error
    slow: bool = False  # runs an optimisation (kept out of the quick test form)
    verify: Callable[[Path], str | None] | None = None  # after exit 0: what is wrong with the result, or None
    warns: str = ""  # after exit 0: a `warning: ` line must mention this

    @property
    def group(self) -> str:
        return self.name.split("/")[0]


@dataclass
class Corpus:
    cases: list[Case] = field(default_factory=list)

    def add(self, name: str, make, expect="error", fragment="", slow=False, verify=None, warns="") -> None:
        """A case; an error case without a fragment must name what its group damages (`default_fragment`)."""
        if any(c.name == name for c in self.cases):
            raise ValueError(f"duplicate fuzz case {name}")
        if expect == "error" and not fragment:
            fragment = default_fragment(name)
        self.cases.append(Case(name, make, expect, fragment, slow or expect == "ok", verify, warns))


READER_GROUPS = ("ply", "transforms", "colmap_txt", "colmap_bin", "llff")


def default_fragment(name: str) -> str:
    """What an error must mention when a case does not say: a reader case's error names a file in the case's own
    folder (not, say, a missing option); an override or option case names its key, option or value."""
    group, _, rest = name.partition("/")
    if group in READER_GROUPS or group == "out":
        return "{work}|/proc"
    word = lambda v: v if len(v) >= 3 and any(ch.isalpha() for ch in v) else ""  # noqa: E731 - no bare numbers
    if group.startswith("override"):
        key, _, value = rest.partition("=")
        return "|".join(p for p in (*key.split("."), word(value)) if p) or rest
    if group == "cli":
        option, _, value = rest.partition("=")
        option = option.split("--")[-1] if "--" in option else option.split("_")[-1]
        return "|".join(dict.fromkeys(p for p in (option.replace("-", "_"), option, word(value)) if p))
    return ""


# ---------------------------------------------------------------- fixtures
def build_fixtures(root: Path, log=print) -> Fixtures:
    """Write the valid inputs under `root` (about 20 s on 2 cores): reused when already there."""
    from ..export.splats import SplatParams, write_ply
    from ..toyworld.capture import write_captured_scene
    from ..workflows.fit import fit
    from ..workflows.generate import generate

    root = Path(root)
    scene, ply = root / "scene", root / "splats" / "point_cloud.ply"
    if not (scene / "transforms.json").is_file():
        write_captured_scene("three", scene, n_views=8, width=32, height=24, seed=0)
    if not ply.is_file():
        rng = np.random.default_rng(0)
        n = 300
        params = SplatParams(
            means=rng.normal(0, 0.3, (n, 3)).astype(np.float32),
            log_scales=np.full((n, 3), -3.5, np.float32),
            quats=np.tile(np.array([1, 0, 0, 0], np.float32), (n, 1)),
            opacity_logits=np.zeros(n, np.float32),
            sh=rng.normal(0, 0.5, (n, 4, 3)).astype(np.float32),
        )
        write_ply(params, ply)
    quiet = lambda *a, **k: None  # noqa: E731
    runs = root / "runs"
    gen = next(runs.glob("generate/*/sds-gaussians@*/metrics.json"), None)
    if gen is None:
        generate(prompt=PROMPT, out=str(runs / "generate"), overrides=GEN_TAIL, progress=False, log=quiet)
        gen = next(runs.glob("generate/*/sds-gaussians@*/metrics.json"))
    fitted = next(runs.glob("fit/*/fit-gaussians@*/metrics.json"), None)
    if fitted is None:
        fit(scene=str(scene), out=str(runs / "fit"), overrides=FIT_TAIL, progress=False, log=quiet)
        fitted = next(runs.glob("fit/*/fit-gaussians@*/metrics.json"))
    return Fixtures(root, scene, ply, gen.parent, fitted.parent)


# ---------------------------------------------------------------- helpers
def copy_scene(work: Path, fx: Fixtures, keep: str = "nerfstudio") -> Path:
    """A copy of the toy capture as one layout: nerfstudio (transforms.json), colmap (sparse/0 text) or
    colmap_bin (sparse/0 binary)."""
    out = work / "scene"
    shutil.copytree(fx.scene, out, ignore=shutil.ignore_patterns("instances", "toy_scene.json"))
    if keep != "nerfstudio":
        (out / "transforms.json").unlink()
        (out / "sparse_pc.ply").unlink()
    if keep == "colmap_bin":
        from ..scenes.colmap import read_cameras, read_images, read_points3d, write_colmap_model

        model = out / "sparse" / "0"
        cams, images = read_cameras(model / "cameras.txt"), read_images(model / "images.txt")
        xyz, rgb = read_points3d(model / "points3D.txt")
        for f in model.iterdir():
            f.unlink()
        write_colmap_model(model, list(cams.values()), images, xyz, rgb, binary=True)
    return out


def _views(n: int) -> Callable[[Path], str | None]:
    """A check that the case's scene reads as `n` views (nothing silently dropped)."""

    def verify(work: Path) -> str | None:
        from ..scenes import load_scene

        got = len(load_scene(work / "scene").image_paths)
        return None if got == n else f"read {got} views of {n}"

    return verify


def fit_argv(scene: Path, work: Path, *extra: str) -> list[str]:
    return ["fit", "--scene", str(scene), "--out", str(work / "out"), *FIT_TAIL, *extra]


def edit_argv(scene: Path, work: Path, *extra: str) -> list[str]:
    return [
        "edit", "--scene", str(scene), "--prompt", "a blue cube", "--source-prompt", "a red cube",
        "--mask", "sphere:0,0,0,0.5", "--out", str(work / "out"), *EDIT_TAIL, *extra,
    ]  # fmt: skip


def gen_argv(work: Path, *extra: str, prompt: str = PROMPT) -> list[str]:
    return ["generate", "--prompt", prompt, "--out", str(work / "out"), *GEN_TAIL, *extra]


def copy_run(work: Path, run: Path) -> Path:
    out = work / "run"
    shutil.copytree(run, out)
    return out


def latest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]


# ---------------------------------------------------------------- 3DGS .ply
PLY_FIELDS = ("x", "f_dc_0", "opacity", "scale_0", "rot_0")


def _ply_bytes(fx: Fixtures) -> tuple[bytes, bytes]:
    raw = fx.ply.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    return raw[:end], raw[end:]


def _ply_edit(mutate) -> Callable:
    """A case that edits the splat file's (header, body) and hands it to `t3d edit --scene`."""

    def make(work: Path, fx: Fixtures) -> list[str]:
        header, body = _ply_bytes(fx)
        path = work / "point_cloud.ply"
        path.write_bytes(mutate(header, body, fx))
        return edit_argv(path, work)

    return make


def _ply_values(field_name: str, value: float, rows=slice(0, 5)) -> Callable:
    def mutate(header, body, fx):
        from plyfile import PlyData

        data = PlyData.read(str(fx.ply))["vertex"].data.copy()
        data[field_name][rows] = value
        return header + data.tobytes()

    return _ply_edit(mutate)


def ply_cases(c: Corpus) -> None:
    c.add("ply/empty_file", _ply_edit(lambda h, b, fx: b""), fragment="not a readable PLY")
    c.add("ply/header_only", _ply_edit(lambda h, b, fx: h), fragment="PLY")
    c.add("ply/not_ply", _ply_edit(lambda h, b, fx: b"hello world\n" * 20), fragment="PLY")
    c.add(
        "ply/random_bytes", _ply_edit(lambda h, b, fx: bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)))
    )
    for frac in (0.1, 0.5, 0.9, 0.999):
        c.add(
            f"ply/truncated_body_{frac}", _ply_edit(lambda h, b, fx, f=frac: h + b[: int(len(b) * f)]), fragment="PLY"
        )
    c.add("ply/truncated_header", _ply_edit(lambda h, b, fx: h[: len(h) // 2]), fragment="PLY")
    c.add("ply/extra_bytes", _ply_edit(lambda h, b, fx: h + b + b"\0" * 7), fragment="bytes after")
    c.add(
        "ply/count_halved", _ply_edit(lambda h, b, fx: h.replace(b"vertex 300", b"vertex 150") + b), fragment="disagree"
    )
    c.add(
        "ply/zero_gaussians",
        _ply_edit(lambda h, b, fx: h.replace(b"vertex 300", b"vertex 0")),
        fragment="zero Gaussians",
    )
    for count, frag in (("0", "disagree"), ("-1", "PLY"), ("99999999999", "PLY"), ("abc", "PLY")):
        c.add(
            f"ply/vertex_count_{count}",
            _ply_edit(lambda h, b, fx, n=count: h.replace(b"element vertex 300", f"element vertex {n}".encode()) + b),
            fragment=frag,
        )
    for prop in ("x", "f_dc_1", "opacity", "scale_2", "rot_3"):
        c.add(
            f"ply/missing_{prop}",
            _ply_edit(lambda h, b, fx, p=prop: _drop_property(fx, p)),
            fragment="missing properties",
        )
    c.add(
        "ply/unknown_type",
        _ply_edit(lambda h, b, fx: h.replace(b"property float x", b"property float128 x") + b),
        fragment="PLY",
    )
    c.add(
        "ply/list_property",
        _ply_edit(lambda h, b, fx: h.replace(b"property float x\n", b"property list uchar float x\n") + b),
    )
    c.add("ply/format_garbage", _ply_edit(lambda h, b, fx: h.replace(b"binary_little_endian", b"binary_middle") + b))
    c.add("ply/sh_rest_count", _ply_edit(lambda h, b, fx: _add_rest(fx, 5)), fragment="SH degree")
    for name in PLY_FIELDS + ("y", "f_dc_2", "scale_1", "rot_2"):
        c.add(f"ply/nan_{name}", _ply_values(name, np.nan), fragment="NaN")
    for name in ("x", "scale_0", "opacity", "f_dc_0"):
        c.add(f"ply/inf_{name}", _ply_values(name, np.inf), fragment="inf")
        c.add(f"ply/neg_inf_{name}", _ply_values(name, -np.inf), fragment="inf")
    c.add("ply/huge_scale", _ply_values("scale_0", 1e30), fragment="scale")
    c.add("ply/huge_position", _ply_values("x", 3e38, slice(0, 1)), expect="ok")  # one far outlier
    c.add("ply/zero_quaternion", _ply_edit(lambda h, b, fx: _zero_quats(fx)), fragment="quaternion")
    c.add("ply/all_at_one_point", _ply_edit(lambda h, b, fx: _same_point(fx)), expect="ok")
    c.add("ply/one_gaussian", _ply_edit(lambda h, b, fx: _subset(fx, 1)), expect="ok")
    c.add("ply/two_gaussians", _ply_edit(lambda h, b, fx: _subset(fx, 2)), expect="ok")
    c.add("ply/big_endian", _ply_edit(lambda h, b, fx: _rewrite(fx, byte_order=">")), expect="ok")
    c.add("ply/ascii", _ply_edit(lambda h, b, fx: _rewrite(fx, text=True)), expect="ok")
    c.add("ply/double_precision", _ply_edit(lambda h, b, fx: _as_double(fx)), expect="ok")
    c.add("ply/directory", lambda w, fx: edit_argv(_mkdir(w / "dir.ply"), w))
    c.add("ply/missing_file", lambda w, fx: edit_argv(w / "nothing.ply", w), fragment="does not exist")


def _vertex(fx: Fixtures):
    from plyfile import PlyData

    return PlyData.read(str(fx.ply))["vertex"].data.copy()


def _write_vertex(data, byte_order="<", text=False) -> bytes:
    import io

    from plyfile import PlyData, PlyElement

    buf = io.BytesIO()
    PlyData([PlyElement.describe(data, "vertex")], text=text, byte_order=byte_order).write(buf)
    return buf.getvalue()


def _drop_property(fx, prop):
    data = _vertex(fx)
    keep = [n for n in data.dtype.names if n != prop]
    out = np.empty(len(data), dtype=[(n, data.dtype[n]) for n in keep])
    for n in keep:
        out[n] = data[n]
    return _write_vertex(out)


def _add_rest(fx, k):
    data = _vertex(fx)
    have = sum(n.startswith("f_rest_") for n in data.dtype.names)
    names = list(data.dtype.names) + [f"f_rest_{have + i}" for i in range(k)]
    out = np.zeros(len(data), dtype=[(n, "<f4") for n in names])
    for n in data.dtype.names:
        out[n] = data[n]
    return _write_vertex(out)


def _zero_quats(fx):
    data = _vertex(fx)
    for i in range(4):
        data[f"rot_{i}"] = 0.0
    return _write_vertex(data)


def _same_point(fx):
    data = _vertex(fx)
    for k in "xyz":
        data[k] = 0.25
    return _write_vertex(data)


def _subset(fx, n):
    return _write_vertex(_vertex(fx)[:n])


def _rewrite(fx, byte_order="<", text=False):
    return _write_vertex(_vertex(fx), byte_order=byte_order, text=text)


def _as_double(fx):
    data = _vertex(fx)
    return _write_vertex(data.astype([(n, "<f8") for n in data.dtype.names]))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- transforms.json
def _transforms(mutate, fragment_ok=None) -> Callable:
    """A case that edits the copy's transforms.json (parsed) with `mutate(meta, scene)` and fits it."""

    def make(work: Path, fx: Fixtures) -> list[str]:
        scene = copy_scene(work, fx)
        path = scene / "transforms.json"
        meta = json.loads(path.read_text())
        for key in ("train_filenames", "val_filenames", "test_filenames"):  # cases edit frames, not the split
            meta.pop(key, None)
        result = mutate(meta, scene)
        path.write_text(result if isinstance(result, str) else json.dumps(meta))
        return fit_argv(scene, work)

    return make


def _set(key, value, frame: int | None = None):
    def mutate(meta, scene):
        target = meta if frame is None else meta["frames"][frame]
        target[key] = value

    return mutate


def _set_all_frames(key, value):
    def mutate(meta, scene):
        meta[key] = value
        for f in meta["frames"]:
            f[key] = value

    return mutate


def _del(key, frame: int | None = None):
    def mutate(meta, scene):
        (meta if frame is None else meta["frames"][frame]).pop(key, None)

    return mutate


def _image_file(mutate_bytes, which=0, mask=False):
    """Edit (a frame's) image file bytes in the copy; keep transforms.json."""

    def mutate(meta, scene):
        rel = meta["frames"][which]["file_path"]
        path = scene / rel
        path.write_bytes(mutate_bytes(path.read_bytes()))

    return mutate


NULL_MEANS_ABSENT = {  # null is an absent field: fl_y falls back to fl_x, cx / cy to the centre, w / h to the image's
    "fl_x": {"fragment": "fl_x"},
    **{key: {"expect": "ok"} for key in ("fl_y", "cx", "cy", "w", "h")},
}


def transforms_cases(c: Corpus) -> None:
    t = _transforms
    c.add("transforms/not_json", t(lambda m, s: "{frames: ["), fragment="invalid JSON")
    c.add("transforms/empty", t(lambda m, s: ""), fragment="invalid JSON")
    c.add("transforms/top_level_list", t(lambda m, s: "[1, 2]"), fragment="JSON object")
    c.add("transforms/top_level_null", t(lambda m, s: "null"), fragment="JSON object")
    c.add("transforms/deep_nesting", t(lambda m, s: "[" * 200000 + "]" * 200000), fragment="nested")
    c.add("transforms/deep_nesting_in_frame", t(lambda m, s: _deep_frame(m)), fragment="nested")
    c.add("transforms/binary", t(lambda m, s: bytes(range(256)).decode("latin-1")))
    c.add(
        "transforms/nan_literal",
        t(lambda m, s: json.dumps(m).replace('"fl_x": ', '"fl_x": NaN, "_x": ', 1)),
        fragment="NaN",
    )
    c.add(
        "transforms/huge_int",
        t(lambda m, s: json.dumps(m).replace('"fl_x": ', '"fl_x": 1' + "0" * 5000 + ', "_x": ', 1)),
    )
    c.add("transforms/no_frames", t(_del("frames")), fragment="frames")
    c.add("transforms/frames_empty", t(_set("frames", [])), fragment="frames")
    c.add("transforms/frames_dict", t(_set("frames", {"a": 1})), fragment="frames")
    c.add("transforms/frame_not_object", t(lambda m, s: m["frames"].__setitem__(0, 5)), fragment="frame")
    c.add("transforms/file_path_missing", t(_del("file_path", 0)), fragment="file_path")
    c.add("transforms/file_path_number", t(_set("file_path", 5, 0)), fragment="file_path")
    c.add("transforms/file_path_empty", t(_set("file_path", "", 0)), fragment="file_path")
    c.add("transforms/file_path_missing_file", t(_set("file_path", "images/nope.png", 0)), fragment="not found")
    c.add("transforms/file_path_directory", t(_set("file_path", "images", 0)))
    c.add("transforms/file_path_outside", t(_set("file_path", "/etc/passwd", 0)), fragment="passwd")
    c.add("transforms/file_path_nul", t(_set("file_path", "images/a\u0000b.png", 0)))
    c.add("transforms/matrix_missing", t(_del("transform_matrix", 0)), fragment="transform_matrix")
    c.add("transforms/matrix_3x3", t(_set("transform_matrix", np.eye(3).tolist(), 0)), fragment="shape")
    c.add("transforms/matrix_strings", t(_set("transform_matrix", [["a"] * 4] * 4, 0)), fragment="matrix")
    c.add("transforms/matrix_ragged", t(_set("transform_matrix", [[1, 0, 0], [0, 1], [0], []], 0)), fragment="matrix")
    c.add("transforms/matrix_nested_deep", t(_set("transform_matrix", [[[[1]]]], 0)))
    c.add("transforms/matrix_nan", t(lambda m, s: m["frames"][0]["transform_matrix"][0].__setitem__(3, "NaN")))
    c.add("transforms/matrix_huge", t(lambda m, s: m["frames"][0]["transform_matrix"][0].__setitem__(3, 1e300)))
    c.add("transforms/matrix_zero", t(_set("transform_matrix", np.zeros((4, 4)).tolist(), 0)), fragment="rigid")
    c.add("transforms/matrix_scaled", t(lambda m, s: _scale_matrix(m, 0, 3.0)), fragment="rigid")
    c.add("transforms/matrix_mirror", t(lambda m, s: _scale_matrix(m, 0, -1.0)), fragment="rigid")
    c.add("transforms/all_cameras_same_pose", t(lambda m, s: _same_pose(m)), fragment="same pose")
    c.add("transforms/one_camera_far_away", t(lambda m, s: _move(m, 1e9)), fragment="translation")
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        c.add(f"transforms/{key}_string", t(_set_all_frames(key, "abc")), fragment=key)
        c.add(f"transforms/{key}_bool", t(_set_all_frames(key, True)), fragment=key)
        c.add(f"transforms/{key}_null", t(_set_all_frames(key, None)), **NULL_MEANS_ABSENT[key])
        c.add(f"transforms/{key}_list", t(_set_all_frames(key, [1, 2])), fragment=key)
    for key in ("fl_x", "fl_y", "w", "h"):
        c.add(f"transforms/{key}_zero", t(_set_all_frames(key, 0)))
        c.add(f"transforms/{key}_negative", t(_set_all_frames(key, -10)))
    c.add("transforms/fl_x_1e30", t(_set_all_frames("fl_x", 1e30)), fragment="field of view")
    c.add("transforms/fl_x_tiny", t(_set_all_frames("fl_x", 1e-6)), fragment="field of view")
    c.add("transforms/cx_1e6", t(_set_all_frames("cx", 1e6)), fragment="principal point")
    c.add("transforms/cy_negative", t(_set_all_frames("cy", -500.0)), fragment="principal point")
    c.add("transforms/w_h_10x", t(lambda m, s: _scale_size(m, 10)), fragment="principal point")
    c.add("transforms/w_h_1e20", t(lambda m, s: _scale_size(m, 1e20)), fragment="beyond")
    c.add("transforms/w_transposed", t(lambda m, s: _swap_size(m)), fragment="transposed")
    c.add("transforms/fl_missing_angle_missing", t(lambda m, s: _drop_focal(m)), fragment="camera_angle_x")
    c.add("transforms/camera_angle_x_only", t(lambda m, s: _angle_only(m)), expect="ok")
    c.add("transforms/camera_angle_x_zero", t(lambda m, s: _angle_only(m, 0.0)), fragment="camera_angle_x")
    c.add("transforms/camera_angle_x_pi", t(lambda m, s: _angle_only(m, 3.2)), fragment="camera_angle_x")
    c.add("transforms/camera_model_unknown", t(_set("camera_model", "FISHEYE_X")), fragment="camera_model")
    c.add("transforms/camera_model_fisheye", t(_set("camera_model", "OPENCV_FISHEYE")), fragment="camera_model")
    c.add("transforms/camera_model_number", t(_set("camera_model", 3)), fragment="camera_model")
    c.add("transforms/k1_huge", t(_set("k1", 1e6)), fragment="distortion")
    c.add("transforms/k1_small", t(_set("k1", 0.01)), expect="ok")
    c.add("transforms/k1_string", t(_set("k1", "x")), fragment="k1")
    c.add("transforms/image_missing", t(lambda m, s: (s / m["frames"][1]["file_path"]).unlink()), fragment="not found")
    # one unreadable image of 8 is more than the 10% a scene may lose (fit.py drops up to 10% with a warning)
    c.add("transforms/image_empty", t(_image_file(lambda b: b"")), fragment="unreadable")
    c.add("transforms/image_truncated", t(_image_file(lambda b: b[: len(b) // 2])), fragment="unreadable")
    c.add("transforms/image_text", t(_image_file(lambda b: b"not an image")), fragment="unreadable")
    c.add("transforms/all_images_broken", t(lambda m, s: _break_all(m, s)), fragment="unreadable")
    c.add("transforms/mask_path_missing_file", t(_set("mask_path", "masks/nope.png", 0)))
    c.add("transforms/mask_path_number", t(_set("mask_path", 7, 0)), fragment="mask_path")
    c.add("transforms/ply_file_path_missing", t(_set("ply_file_path", "nope.ply")), fragment="nope.ply")
    c.add("transforms/ply_file_path_garbage", t(lambda m, s: (s / "sparse_pc.ply").write_bytes(b"garbage")))
    c.add("transforms/points_nan", t(lambda m, s: _nan_points(s)), fragment="NaN")
    c.add("transforms/one_frame", t(lambda m, s: m.__setitem__("frames", m["frames"][:1])), expect="ok")
    c.add("transforms/duplicate_frames", t(lambda m, s: m.__setitem__("frames", m["frames"] * 2)), expect="ok")
    c.add("transforms/applied_transform_bad", t(_set("applied_transform", [[1, 2]])), expect="ok")  # not read
    c.add("transforms/train_filenames_unknown", t(_set("train_filenames", ["nope.png"])), fragment="nope.png")
    c.add("transforms/same_pose_twice", t(lambda m, s: _same_pose(m, 2)), expect="ok")
    c.add("transforms/extra_keys", t(lambda m, s: m.update({"zzz": {"a": [1, 2]}, "frames": m["frames"]})), expect="ok")
    c.add(
        "transforms/crlf_and_bom", t(lambda m, s: "\ufeff" + json.dumps(m, indent=1).replace("\n", "\r\n")), expect="ok"
    )
    c.add("transforms/latin1_file", lambda w, fx: _latin1_transforms(w, fx))
    c.add("transforms/scene_is_file", lambda w, fx: fit_argv(_touch(w / "scene.txt"), w), fragment="not a scene file")
    c.add("transforms/scene_missing", lambda w, fx: fit_argv(w / "nowhere", w), fragment="not found")
    c.add("transforms/scene_empty_dir", lambda w, fx: fit_argv(_mkdir(w / "empty"), w), fragment="not a captured scene")


def _deep_frame(meta):
    meta["frames"][0]["transform_matrix"] = json.loads("[" * 900 + "]" * 900)
    text = json.dumps(meta)
    return text.replace("[" * 900, "[" * 100000, 1).replace("]" * 900, "]" * 100000, 1)


def _scale_matrix(meta, i, s):
    m = np.array(meta["frames"][i]["transform_matrix"], dtype=float)
    m[:3, :3] *= s
    meta["frames"][i]["transform_matrix"] = m.tolist()


def _same_pose(meta, count=None):
    for f in meta["frames"][:count]:
        f["transform_matrix"] = meta["frames"][0]["transform_matrix"]


def _move(meta, x):
    meta["frames"][3]["transform_matrix"][0][3] = x


def _frames_with(meta):
    return [meta, *meta["frames"]]


def _scale_size(meta, k):
    for d in _frames_with(meta):
        for key in ("w", "h"):
            if key in d:
                d[key] = d[key] * k


def _swap_size(meta):
    for d in _frames_with(meta):
        if "w" in d:
            d["w"], d["h"] = d["h"], d["w"]


def _drop_focal(meta):
    for d in _frames_with(meta):
        for key in ("fl_x", "fl_y", "camera_angle_x", "camera_angle_y"):
            d.pop(key, None)


def _angle_only(meta, angle=None):
    import math

    for d in _frames_with(meta):
        if "fl_x" in d:
            d["camera_angle_x"] = angle if angle is not None else 2 * math.atan(0.5 * d["w"] / d["fl_x"])
            d.pop("fl_x")
            d.pop("fl_y", None)


def _break_all(meta, scene):
    for f in meta["frames"]:
        (scene / f["file_path"]).write_bytes(b"x")


def _nan_points(scene):
    from ..scenes.nerfstudio import read_points_ply

    xyz, rgb = read_points_ply(scene / "sparse_pc.ply")
    xyz[0, 0] = np.nan
    _write_points(scene / "sparse_pc.ply", xyz)


def _write_points(path, xyz):
    from plyfile import PlyData, PlyElement

    v = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    v["x"], v["y"], v["z"] = xyz.T
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))


def _latin1_transforms(work, fx):
    scene = copy_scene(work, fx)
    path = scene / "transforms.json"
    meta = json.loads(path.read_text())
    meta["note"] = "caf\u00e9"
    path.write_bytes(json.dumps(meta, ensure_ascii=False).encode("latin-1"))
    return fit_argv(scene, work)


def _touch(path: Path) -> Path:
    path.write_text("x")
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _pickle_mask(work: Path) -> Path:
    """A gaussian_mask.pt holding a pickled object besides tensors (weights_only refuses it)."""
    import pickle

    path = work / "gaussian_mask.pt"
    path.write_bytes(pickle.dumps({"mask": object()}))
    return path


# ---------------------------------------------------------------- COLMAP text
def _colmap_txt(file: str, mutate) -> Callable:
    def make(work: Path, fx: Fixtures) -> list[str]:
        scene = copy_scene(work, fx, "colmap")
        path = scene / "sparse" / "0" / file
        text = path.read_text()
        out = mutate(text)
        if isinstance(out, bytes):
            path.write_bytes(out)
        else:
            path.write_text(out)
        return fit_argv(scene, work)

    return make


def _line_edit(fn):
    """Apply fn(tokens) -> tokens to the first data line."""

    def mutate(text):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.strip() and not line.startswith("#"):
                lines[i] = " ".join(fn(line.split()))
                break
        return "\n".join(lines) + "\n"

    return mutate


def _tok(index, value):
    def fn(tok):
        tok[index] = value
        return tok

    return fn


def colmap_txt_cases(c: Corpus) -> None:
    cam, img, pts = "cameras.txt", "images.txt", "points3D.txt"
    c.add("colmap_txt/camera_model_unknown", _colmap_txt(cam, _line_edit(_tok(1, "WEIRD"))), fragment="camera model")
    c.add(
        "colmap_txt/camera_model_fisheye",
        _colmap_txt(cam, _line_edit(lambda t: [t[0], "OPENCV_FISHEYE", *t[2:4], *t[4:8], "0", "0", "0", "0"])),
    )
    c.add("colmap_txt/camera_too_few_params", _colmap_txt(cam, _line_edit(lambda t: t[:-1])), fragment="parameters")
    c.add("colmap_txt/camera_short_line", _colmap_txt(cam, _line_edit(lambda t: t[:2])), fragment="expected")
    for name, index, value, frag in (
        ("width_zero", 2, "0", ""), ("width_negative", 2, "-5", ""), ("width_float", 2, "32.5", "int"),
        ("width_9600", 2, "9600", ""), ("width_overflow", 2, str(2**70), ""), ("height_zero", 3, "0", ""),
        ("focal_nan", 4, "nan", ""), ("focal_zero", 4, "0", ""), ("focal_inf", 4, "inf", ""),
        ("focal_1e30", 4, "1e30", "field of view"), ("cx_1e6", 6, "1e6", "principal point"),
        ("id_text", 0, "one", "int"), ("param_text", 5, "x", "float"),
    ):  # fmt: skip
        c.add(f"colmap_txt/camera_{name}", _colmap_txt(cam, _line_edit(_tok(index, value))), fragment=frag)
    c.add("colmap_txt/cameras_empty", _colmap_txt(cam, lambda t: ""), fragment="camera")
    c.add("colmap_txt/cameras_binary", _colmap_txt(cam, lambda t: bytes(range(256))), fragment="UTF-8")
    c.add("colmap_txt/cameras_crlf", _colmap_txt(cam, lambda t: t.replace("\n", "\r\n")), expect="ok")
    c.add("colmap_txt/cameras_tabs", _colmap_txt(cam, lambda t: t.replace(" ", "\t")), expect="ok")
    c.add(
        "colmap_txt/cameras_duplicate_id", _colmap_txt(cam, lambda t: t + t.splitlines()[-1] + "\n"), fragment="twice"
    )
    c.add("colmap_txt/images_no_points2d_lines", _colmap_txt(img, _drop_points2d), expect="ok", verify=_views(8))
    c.add("colmap_txt/images_empty", _colmap_txt(img, lambda t: ""), fragment="zero")
    c.add("colmap_txt/images_short_line", _colmap_txt(img, _line_edit(lambda t: t[:5])), fragment="expected")
    c.add("colmap_txt/images_unknown_camera", _colmap_txt(img, _line_edit(_tok(8, "99"))), fragment="camera")
    c.add(
        "colmap_txt/images_quat_zero",
        _colmap_txt(img, _line_edit(lambda t: [t[0], "0", "0", "0", "0", *t[5:]])),
        fragment="quaternion",
    )
    c.add("colmap_txt/images_quat_nan", _colmap_txt(img, _line_edit(_tok(1, "nan"))), fragment="NaN")
    c.add("colmap_txt/images_trans_inf", _colmap_txt(img, _line_edit(_tok(5, "inf"))), fragment="inf")
    c.add(
        "colmap_txt/images_quat_unnormalised",
        _colmap_txt(img, _line_edit(lambda t: [t[0], *[str(float(v) * 3) for v in t[1:5]], *t[5:]])),
        expect="ok",
    )
    c.add(
        "colmap_txt/images_name_missing_file", _colmap_txt(img, _line_edit(_tok(9, "nope.png"))), fragment="not found"
    )
    c.add("colmap_txt/images_name_with_space", _colmap_txt(img, _line_edit(_tok(9, "no pe.png"))), fragment="not found")
    c.add("colmap_txt/images_duplicate", _colmap_txt(img, lambda t: t + _first_image(t)), fragment="twice")
    c.add("colmap_txt/images_id_text", _colmap_txt(img, _line_edit(_tok(0, "x"))), fragment="int")
    c.add("colmap_txt/points_short", _colmap_txt(pts, lambda t: "1 0 0\n"), fragment="expected")
    c.add("colmap_txt/points_nan", _colmap_txt(pts, lambda t: "1 nan 0 0 255 0 0 0.1\n" + t), fragment="NaN")
    c.add("colmap_txt/points_colour_300", _colmap_txt(pts, lambda t: "1 0 0 0 300 0 0 0.1\n" + t), fragment="0-255")
    c.add("colmap_txt/points_empty", _colmap_txt(pts, lambda t: ""), expect="ok")
    c.add("colmap_txt/points_missing", lambda w, fx: _colmap_remove(w, fx, "points3D.txt"), expect="ok")
    c.add("colmap_txt/cameras_missing", lambda w, fx: _colmap_remove(w, fx, "cameras.txt"), fragment="cameras")
    c.add("colmap_txt/images_missing", lambda w, fx: _colmap_remove(w, fx, "images.txt"), fragment="images")
    c.add("colmap_txt/all_points_one_place", _colmap_txt(pts, _one_place), expect="ok")
    c.add("colmap_txt/points_from_another_model", _points_elsewhere, fragment="disagree")


def _drop_points2d(text):
    lines, out, expect_points = text.splitlines(), [], False
    for line in lines:
        if line.startswith("#"):
            out.append(line)
            continue
        if expect_points:
            expect_points = False
            continue
        out.append(line)
        expect_points = True
    return "\n".join(out) + "\n"


def _first_image(text):
    rows = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return rows[0] + "\n\n"


def _one_place(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        tok = line.split()
        tok[1:4] = ["0.1", "0.2", "0.3"]
        rows.append(" ".join(tok))
    return "\n".join(rows) + "\n"


def _points_elsewhere(work, fx):
    """points3D.txt from another reconstruction than images.txt: every point matched in every view (a track
    naming each image), but far from where those views look."""
    from ..scenes.colmap import read_cameras, read_images, read_points3d, write_colmap_model

    scene = copy_scene(work, fx, "colmap")
    model = scene / "sparse" / "0"
    cams, images = read_cameras(model / "cameras.txt"), read_images(model / "images.txt")
    xyz, rgb = read_points3d(model / "points3D.txt")
    tracks = [[im.id for im in images]] * len(xyz)
    write_colmap_model(model, list(cams.values()), images, xyz + 100.0, rgb, binary=False, tracks=tracks)
    return fit_argv(scene, work)


def _colmap_remove(work, fx, name):
    scene = copy_scene(work, fx, "colmap")
    (scene / "sparse" / "0" / name).unlink()
    return fit_argv(scene, work)


# ---------------------------------------------------------------- COLMAP binary
def _colmap_bin(file: str, mutate) -> Callable:
    def make(work: Path, fx: Fixtures) -> list[str]:
        scene = copy_scene(work, fx, "colmap_bin")
        path = scene / "sparse" / "0" / file
        path.write_bytes(mutate(path.read_bytes()))
        return fit_argv(scene, work)

    return make


def _patch(offset: int, fmt: str, value) -> Callable:
    def mutate(data: bytes) -> bytes:
        b = bytearray(data)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    return mutate


def colmap_bin_cases(c: Corpus) -> None:
    cam, img, pts = "cameras.bin", "images.bin", "points3D.bin"
    c.add("colmap_bin/valid", _colmap_bin(cam, lambda b: b), expect="ok")
    for file in (cam, img, pts):
        stem = file.split(".")[0]
        c.add(f"colmap_bin/{stem}_empty", _colmap_bin(file, lambda b: b""), fragment="truncated")
        for frac in (0.3, 0.7, 0.99):
            c.add(
                f"colmap_bin/{stem}_truncated_{frac}", _colmap_bin(file, lambda b, f=frac: b[: max(8, int(len(b) * f))])
            )
        c.add(f"colmap_bin/{stem}_trailing", _colmap_bin(file, lambda b: b + b"\1\2\3"), fragment="unexpected bytes")
        c.add(f"colmap_bin/{stem}_count_huge", _colmap_bin(file, _patch(0, "<Q", 2**63)), fragment="truncated")
        c.add(f"colmap_bin/{stem}_count_max", _colmap_bin(file, _patch(0, "<Q", 2**64 - 1)), fragment="truncated")
        c.add(
            f"colmap_bin/{stem}_random",
            _colmap_bin(file, lambda b: bytes(np.random.default_rng(2).integers(0, 256, len(b), np.uint8))),
        )
    # cameras.bin record: u64 n | i32 id, i32 model, u64 w, u64 h, f64 params
    c.add("colmap_bin/camera_model_id_99", _colmap_bin(cam, _patch(12, "<i", 99)), fragment="camera model")
    c.add("colmap_bin/camera_model_id_negative", _colmap_bin(cam, _patch(12, "<i", -1)), fragment="camera model")
    c.add("colmap_bin/camera_width_overflow", _colmap_bin(cam, _patch(16, "<Q", 2**63 + 5)), fragment="width")
    c.add("colmap_bin/camera_width_9600", _colmap_bin(cam, _patch(16, "<Q", 9600)))
    c.add("colmap_bin/camera_height_zero", _colmap_bin(cam, _patch(24, "<Q", 0)), fragment="height")
    c.add("colmap_bin/camera_focal_nan", _colmap_bin(cam, _patch(32, "<d", float("nan"))))
    c.add("colmap_bin/camera_focal_negative", _colmap_bin(cam, _patch(32, "<d", -5.0)))
    c.add("colmap_bin/camera_focal_1e300", _colmap_bin(cam, _patch(32, "<d", 1e300)), fragment="field of view")
    # images.bin record: u64 n | i32 id, f64 q[4], f64 t[3], i32 camera_id, name\0, u64 n2d, ...
    c.add("colmap_bin/image_quat_nan", _colmap_bin(img, _patch(12, "<d", float("nan"))), fragment="NaN")
    c.add("colmap_bin/image_quat_zero", _colmap_bin(img, lambda b: _zero_quat_bin(b)), fragment="quaternion")
    c.add("colmap_bin/image_camera_unknown", _colmap_bin(img, _patch(68, "<i", 77)), fragment="camera")
    c.add("colmap_bin/image_name_not_utf8", _colmap_bin(img, lambda b: b[:72] + b"\xff\xfe" + b[74:]), fragment="UTF-8")
    c.add("colmap_bin/image_name_unterminated", _colmap_bin(img, lambda b: b.replace(b"\0", b"x")))
    c.add("colmap_bin/image_points2d_huge", _colmap_bin(img, lambda b: _points2d_count(b, 2**62)), fragment="truncated")
    c.add("colmap_bin/points_track_huge", _colmap_bin(pts, _patch(8 + 43, "<Q", 2**62)), fragment="truncated")


def _zero_quat_bin(data: bytes) -> bytes:
    b = bytearray(data)
    struct.pack_into("<4d", b, 12, 0.0, 0.0, 0.0, 0.0)
    return bytes(b)


def _points2d_count(data: bytes, value: int) -> bytes:
    b = bytearray(data)
    end = data.index(b"\0", 72) + 1
    struct.pack_into("<Q", b, end, value)
    return bytes(b)


# ---------------------------------------------------------------- LLFF
def _llff(write) -> Callable:
    def make(work: Path, fx: Fixtures) -> list[str]:
        scene = copy_scene(work, fx, "colmap")
        shutil.rmtree(scene / "sparse")
        write(scene / "poses_bounds.npy")
        return fit_argv(scene, work)

    return make


def _llff_array(arr):
    return lambda path: np.save(path, arr, allow_pickle=True)


def llff_cases(c: Corpus) -> None:
    good = np.zeros((8, 17))
    good[:, :15] = np.concatenate([np.eye(3), np.zeros((3, 1)), [[24], [32], [30]]], 1).reshape(-1)
    good[:, 15:] = [0.5, 5.0]
    c.add("llff/wrong_shape", _llff(_llff_array(np.zeros((8, 16)))), fragment="shape")
    c.add("llff/wrong_count", _llff(_llff_array(good[:3])), fragment="8")
    c.add("llff/nan", _llff(_llff_array(np.where(np.arange(17) == 3, np.nan, good))), fragment="NaN")
    c.add("llff/pickled_object", _llff(_llff_array(np.array([{"a": 1}], dtype=object))), fragment="pickle")
    c.add("llff/not_npy", _llff(lambda p: p.write_bytes(b"hello")), fragment="npy")
    c.add("llff/truncated", _llff(lambda p: (np.save(p, good), p.write_bytes(p.read_bytes()[:100]))), fragment="npy")
    c.add("llff/strings", _llff(_llff_array(np.array([["a"] * 17] * 8))), fragment="number")
    c.add("llff/bounds_negative", _llff(_llff_array(np.where(np.arange(17) == 15, -1.0, good))), fragment="bounds")
    c.add("llff/focal_zero", _llff(_llff_array(np.where(np.arange(17) == 14, 0.0, good))))


# ---------------------------------------------------------------- overrides and options
def _gen(*extra: str, prompt: str = PROMPT) -> Callable:
    return lambda w, fx: gen_argv(w, *extra, prompt=prompt)


def _fit(*extra: str) -> Callable:
    return lambda w, fx: fit_argv(fx.scene, w, *extra)


TRAINER_BAD = {
    "trainer.steps": ["0", "-1", "1.5", "abc", "[1]", "1e99"],
    "trainer.batch_size": ["0", "-1", "x"],
    "trainer.resolution": ["0", "-8", "5000", "nan"],
    "trainer.log_every": ["0", "-1"],
    "trainer.checkpoint_every": ["-1"],
    "trainer.preview_every": ["-5"],
    "trainer.seed": ["-1", str(2**64), "1.5"],
    "trainer.grad_clip_norm": ["-1", "nan"],
    "trainer.cameras.azimuth": ["[1]", "[0,1,2]", "[10,-10]", "[nan,1]", "5"],
    "trainer.cameras.elevation": ["[-100,0]", "[0,100]", "[x,y]"],
    "trainer.cameras.radius": ["[0,0]", "[-1,2]", "[inf,inf]"],
    "trainer.cameras.fovy": ["[0,0]", "[200,200]", "[40]"],
}


def override_cases(c: Corpus) -> None:
    for key, values in TRAINER_BAD.items():
        for value in values:
            c.add(f"override/{key}={value}", _gen(f"{key}={value}"), fragment=key.split(".")[-1])
    for bad in (
        "trainer.stepz=5", "trainerr.steps=5", "steps", "=5", "trainer..steps=5", "trainer.steps==5",
        "trainer.steps=[1,", "guidance.nope=1", "trainer=5", "trainer.cameras=3", "representation=voxels",
        "guidance_type=magic", "guidance.guidance_scale=nan", "guidance.guidance_scale=-1",
        "guidance.guidance_scale=abc", "device=tpu", "device=cuda:9", "native=maybe", "export=[fbx]", "export=glb",
        "prior_precision=half", "prior_precision=[bfloat16]",
        "prior=/no/such/prior", "seed=1", "trainer.seed=x", "gaussians.sh_degree=9", "gaussians.sh_degree=-1",
        "gaussians.lr_means=[exp,0,1]", "gaussians.lr_means=[cosine,0,1,2,3]", "gaussians.init_points=0",
        "guidance.t_range=[0.9,0.1]", "guidance.t_range=[0,2]", "guidance.weighting=whatever",
        "trainer.steps=\udcff", "trainer.cameras.fovy=[40,40,40]",
    ):  # fmt: skip
        c.add(f"override/{bad}", _gen(bad))
    for bad in (
        "max_side=0", "max_side=-3", "downscale=0", "downscale=nan", "downscale=-2", "resolution=0",
        "eval_resolution=half", "background=purple", "background_points=-1", "background_radius=0.5",
        "init_points=0", "lambda_dssim=2", "representation=mesh", "appearance=maybe", "lr_appearance=0",
        "gaussians.max_points=0", "gaussians.strategy=nope", "gaussians.capture.refine_every=0",
    ):  # fmt: skip
        c.add(f"override_fit/{bad}", _fit(bad))


def silent_setting_cases(c: Corpus) -> None:
    """Settings a method does not read are errors, not silently ignored; the oracle refuses a prompt up front."""
    for method, key, value in (
        ("csd", "guidance_scale", "20"), ("bsd", "guidance_scale", "20"), ("bsd", "weighting", "uniform"),
    ):  # fmt: skip
        c.add(
            f"override/{method}_{key}={value}",
            _gen(f"guidance_type={method}", f"guidance.{key}={value}"),
            fragment=f"guidance.{key}",
        )
    c.add("override/csd_default_scale_is_fine", _gen("guidance_type=csd"), expect="ok")
    c.add(
        "cli/oracle_unknown_prompt",
        _gen("prior=toyworld-oracle", prompt="a hamburger"),
        fragment="knows only toy-world prompts",
    )


def option_cases(c: Corpus) -> None:
    c.add("cli/no_command", lambda w, fx: [], expect="usage")
    c.add("cli/unknown_command", lambda w, fx: ["generat"], expect="usage")
    c.add("cli/unknown_option", lambda w, fx: ["generate", "--promt", "x"])
    c.add("cli/generate_no_prompt", lambda w, fx: ["generate", "--out", str(w)], fragment="prompt")
    for name, prompt in (
        ("empty", ""), ("spaces", "   "), ("newlines", "\n\n"), ("control", "a red\x1b[31m cone"),
            ):  # fmt: skip
        c.add(f"cli/prompt_{name}", _gen(prompt=prompt), fragment="prompt")
    c.add("cli/prompt_long", _gen(prompt="a red cone " * 2000), expect="ok", warns="tokens")
    c.add("cli/prompt_unknown_words", _gen(prompt="a hamburger"), expect="ok", warns="hamburger")
    c.add("cli/prompt_emoji", _gen(prompt="a red cone \U0001f389"), expect="ok")
    c.add("cli/prompt_accents", _gen(prompt="a red cone, caf\u00e9"), expect="ok")
    for opt, value in (
        ("--steps", "0"), ("--steps", "-1"), ("--steps", "x"), ("--seed", "-1"), ("--seed", str(2**64)),
        ("--seed", "1e3"), ("--representation", "voxels"), ("--guidance", "magic"), ("--prior", "/no/such"),
        ("--config", "/no/such.yaml"), ("--device", "tpu"), ("--stages", "nerf,,mesh"),
    ):  # fmt: skip
        c.add(f"cli/generate{opt}={value}", _gen(opt, value))
    c.add("cli/generate_config_is_dir", lambda w, fx: gen_argv(w, "--config", str(w)), fragment="config")
    c.add("cli/prior_is_file", lambda w, fx: gen_argv(w, "--prior", str(_touch(w / "prior.txt"))), fragment="prior")
    c.add("cli/prior_empty_dir", lambda w, fx: gen_argv(w, "--prior", str(_mkdir(w / "prior"))), fragment="prior")
    c.add("cli/prior_pickle_bin", lambda w, fx: gen_argv(w, "--prior", str(_pickle_prior(w))), fragment="pickle")
    for opt, value in (
        ("--max-side", "0"), ("--downscale", "-1"), ("--resolution", "0"), ("--eval-resolution", "x"),
        ("--background", "pink"), ("--representation", "mesh"), ("--steps", "0"),
    ):  # fmt: skip
        c.add(f"cli/fit{opt}={value}", lambda w, fx, o=opt, v=value: fit_argv(fx.scene, w, o, v))
    c.add("cli/fit_no_scene", lambda w, fx: ["fit", "--out", str(w)], fragment="scene")
    for mask in ("box:1,2", "sphere:0,0,0,-1", "sphere:a,b,c,d", "cone:1,2,3", "box:0,0,0,0,0,0", "view:", "view:x"):
        c.add(f"cli/edit_mask={mask}", lambda w, fx, m=mask: _edit_mask(w, fx, m))
    c.add("cli/edit_view_mask_on_ply", lambda w, fx: _edit_view_mask_ply(w, fx), fragment="view")
    c.add("cli/edit_method_unknown", lambda w, fx: edit_argv(fx.fit_run, w, "--method", "magic"), fragment="magic")
    c.add("cli/edit_no_prompt", lambda w, fx: ["edit", "--scene", str(fx.fit_run), "--out", str(w)], fragment="prompt")
    drag = lambda *extra: lambda w, fx: ["edit", "--scene", str(fx.fit_run), "--method", "drag", *extra,  # noqa: E731
                                         "--out", str(w)]  # fmt: skip
    c.add("cli/drag_no_points", drag("--mask", "sphere:0,0,0,1"), fragment="needs points")
    c.add("cli/drag_no_mask", drag("--drag", "0,0,0>0,0.1,0"), fragment="--mask")
    c.add("cli/drag_bad_point", drag("--drag", "0,0,0>0,0.1", "--mask", "sphere:0,0,0,1"), fragment="bad --drag")
    c.add("cli/drag_nan_point", drag("--drag", "0,0,nan>0,0.1,0", "--mask", "sphere:0,0,0,1"), fragment="NaN")
    c.add("cli/drag_far_point", drag("--drag", "0,0,0>99,0,0", "--mask", "sphere:0,0,0,1"), fragment="outside")
    unequal = '{"handle_points": [[0, 0, 0]], "target_points": []}'
    c.add(
        "cli/drag_file_unequal",
        lambda w, fx: drag("--drag-file", str(_write(w / "d.json", unequal)), "--mask", "sphere:0,0,0,1")(w, fx),
        fragment="target points",
    )
    c.add(
        "cli/drag_mask_pickle",
        lambda w, fx: drag("--drag", "0,0,0>0,0.1,0", "--mask", str(_pickle_mask(w)))(w, fx),
        fragment="unreadable",
    )
    c.add("cli/drag_points_on_dds", lambda w, fx: edit_argv(fx.fit_run, w, "--drag", "0,0,0>0,1,0"), fragment="drag")
    c.add("cli/reward_unknown", _gen("reward.name=magic", "reward.model=/x"), fragment="unknown reward")
    c.add("cli/reward_no_model", _gen("reward.name=vlm"), fragment="reward.model")
    c.add("cli/reward_model_missing", _gen("reward.name=clip", "reward.model=/no/such"), fragment="not a local CLIP")
    c.add(
        "cli/reward_views_zero", _gen("reward.name=clip", "reward.model=/x", "reward.views=0"), fragment="reward.views"
    )
    c.add("cli/visual_prompt_missing", _gen("--visual-prompt", "/no/such.png"), fragment="reference.image")
    c.add(
        "cli/visual_prompt_not_an_image",
        lambda w, fx: gen_argv(w, "--visual-prompt", str(_write(w / "front.png", "not a png"))),
        fragment="cannot read the image",
    )
    c.add("cli/viewer_port_bad", _gen("--viewer", "--viewer-port", "99999"), fragment="--viewer-port")
    batch = lambda *extra: lambda w, fx: ["batch", "--out", str(w / "b"), *extra]  # noqa: E731
    prompts = lambda text: lambda w, fx: batch("--prompts", str(_write(w / "p.txt", text)))(w, fx)  # noqa: E731
    c.add("cli/batch_no_prompts", batch(), fragment="--prompts")
    c.add("cli/batch_empty_prompt_file", prompts("# nothing\n\n"), fragment="no prompts")
    c.add("cli/batch_binary_prompt_file", prompts("a red cone\n\x00\x01\n"), fragment="line 2")
    c.add("cli/batch_prompt_file_is_dir", lambda w, fx: batch("--prompts", str(w))(w, fx), fragment="prompt file")
    c.add(
        "cli/batch_seeds_zero",
        lambda w, fx: batch("--seeds", "0", "--prompts", str(_write(w / "p.txt", "a red cone\n")))(w, fx),
        fragment="--seeds",
    )
    c.add("cli/batch_engine_unknown", batch("--engine", "dask"), fragment="dask")
    c.add("cli/batch_jobs_local", batch("--jobs", "4"), fragment="--engine ray")
    c.add("cli/batch_gpus_negative", batch("--engine", "ray", "--gpus-per-run", "-1"), fragment="--gpus-per-run")
    c.add("cli/batch_resume_nothing", batch("--resume"), fragment="holds no batch")
    c.add(
        "cli/batch_resume_damaged",
        lambda w, fx: batch("--resume")(w, fx) if _write(_mkdir(w / "b") / "batch.json", "{not json") else [],
        fragment="damaged",
    )
    c.add("cli/export_format_unknown", lambda w, fx: ["export", str(fx.run), "--format", "fbx"], fragment="fbx")
    c.add(
        "cli/export_faces_zero",
        lambda w, fx: ["export", str(fx.run), "--format", "glb", "--faces", "0", "--out", str(w / "m.glb")],
        fragment="--faces",
    )
    c.add(
        "cli/export_texture_size_3",
        lambda w, fx: ["export", str(fx.run), "--format", "glb", "--texture-size", "3", "--out", str(w / "m.glb")],
    )
    c.add(
        "cli/render_cameras_unknown", lambda w, fx: ["render", str(fx.run), "--cameras", "nope", "--out", str(w / "r")]
    )
    c.add(
        "cli/render_resolution_zero",
        lambda w, fx: ["render", str(fx.run), "--resolution", "0", "--out", str(w / "r")],
        fragment="--resolution",
    )
    c.add(
        "cli/render_frames_zero",
        lambda w, fx: ["render", str(fx.run), "--frames", "0", "--out", str(w / "r")],
        fragment="--frames",
    )
    c.add("cli/render_fps_nan", lambda w, fx: ["render", str(fx.run), "--fps", "nan", "--out", str(w / "r")])
    c.add(
        "cli/toyworld_scene_unknown",
        lambda w, fx: ["toyworld", "scene", "nope", "--out", str(w / "s")],
        fragment="nope",
    )
    c.add(
        "cli/toyworld_scene_views_zero",
        lambda w, fx: ["toyworld", "scene", "three", "--out", str(w / "s"), "--views", "0"],
        fragment="views",
    )
    c.add(
        "cli/toyworld_render_unknown",
        lambda w, fx: ["toyworld", "render", "--object", "blue whale", "--out", str(w / "x.png")],
    )
    c.add(
        "cli/bench_unknown_method",
        lambda w, fx: ["bench", "guidance", "--methods", "sds,magic", "--out", str(w)],
        fragment="magic",
    )


def _edit_mask(work, fx, mask):
    argv = edit_argv(fx.fit_run, work)
    argv[argv.index("--mask") + 1] = mask
    return argv


def _edit_view_mask_ply(work, fx):
    mask = work / "mask.png"
    from PIL import Image

    Image.new("L", (32, 24), 255).save(mask)
    argv = edit_argv(fx.ply, work)
    argv[argv.index("--mask") + 1] = f"view:frame_00001.png:{mask}"
    return argv


def _pickle_prior(work: Path) -> Path:
    """A copy of the embedded prior whose text encoder weights are a pickle (.bin) instead of safetensors."""
    import pickle

    from ..priors import default_prior_path

    prior = work / "prior"
    shutil.copytree(default_prior_path(), prior)
    for f in (prior / "text_encoder").glob("*.safetensors"):
        f.unlink()
    (prior / "text_encoder" / "pytorch_model.bin").write_bytes(pickle.dumps({"a": 1}))
    return prior


# ---------------------------------------------------------------- output paths
def output_cases(c: Corpus) -> None:
    c.add(
        "out/generate_out_is_file",
        lambda w, fx: ["generate", "--prompt", PROMPT, "--out", str(_touch(w / "f")), *GEN_TAIL],
        fragment="must name a folder",
    )
    c.add(
        "out/generate_out_unwritable", lambda w, fx: ["generate", "--prompt", PROMPT, "--out", "/proc/t3d", *GEN_TAIL]
    )
    c.add(
        "out/fit_out_is_file", lambda w, fx: ["fit", "--scene", str(fx.scene), "--out", str(_touch(w / "f")), *FIT_TAIL]
    )
    c.add(
        "out/export_out_is_dir", lambda w, fx: ["export", str(fx.run), "--format", "ply", "--out", str(_mkdir(w / "d"))]
    )
    c.add("out/export_out_unwritable", lambda w, fx: ["export", str(fx.run), "--format", "ply", "--out", "/proc/x.ply"])
    c.add(
        "out/export_out_wrong_suffix",
        lambda w, fx: ["export", str(fx.run), "--format", "ply", "--out", str(w / "x.glb")],
    )
    c.add(
        "out/export_out_parent_is_file",
        lambda w, fx: ["export", str(fx.run), "--format", "ply", "--out", str(_touch(w / "f") / "x.ply")],
    )
    c.add(
        "out/render_out_is_file",
        lambda w, fx: ["render", str(fx.run), "--frames", "2", "--no-video", "--out", str(_touch(w / "f"))],
    )
    c.add(
        "out/export_ok",
        lambda w, fx: ["export", str(fx.run), "--format", "splat", "--out", str(w / "x.splat")],
        expect="ok",
    )


# ---------------------------------------------------------------- damaged runs
def _damaged(damage, command: str = "eval", run: str = "run") -> Callable:
    def make(work: Path, fx: Fixtures) -> list[str]:
        path = copy_run(work, fx.run if run == "run" else fx.fit_run)
        damage(path)
        if command == "eval":
            return ["eval", str(path)]
        if command == "export":
            return ["export", str(path), "--format", "ply", "--out", str(work / "x.ply")]
        if command == "render":
            return ["render", str(path), "--frames", "2", "--resolution", "16", "--no-video", "--out", str(work / "r")]
        if command == "resume":
            kind = "fit" if run == "fit" else "generate"
            return [kind, "--resume", str(path)]
        raise ValueError(command)

    return make


def _ckpt(fn):
    return lambda run: fn(latest_checkpoint(run))


def _ckpt_json(fn):
    def damage(run):
        p = latest_checkpoint(run).with_suffix(".json")
        p.write_text(fn(p.read_text()))

    return damage


def _nan_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    key = sorted(k for k in tensors if tensors[k].is_floating_point())[0]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, str(path))


def _shape_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    key = sorted(k for k in tensors if tensors[k].is_floating_point() and tensors[k].dim() > 1)[0]
    tensors[key] = tensors[key][:1].clone()
    save_file(tensors, str(path))


def _drop_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, str(path))


RUN_FRAGMENTS = {  # what the error about each damaged run must mention
    **dict.fromkeys(
        [
            "checkpoint_truncated",
            "checkpoint_empty",
            "checkpoint_garbage",
            "checkpoint_header_huge",
            "checkpoint_nan",
            "checkpoint_wrong_shape",
            "checkpoint_missing_tensor",
            "checkpoints_gone",
            "latest_garbage",
            "step_file_no_step",
            "step_file_garbage",
            "step_file_step_text",
            "generator_state_bad",
        ],
        "checkpoint|step_",
    ),  # fmt: skip
    "config_missing": "config.yaml|not a run directory",
    "config_garbage": "config.yaml",
    "config_unknown_key": "zzz",
    "run_json_missing": "run.json",
    "run_json_garbage": "run.json",
    "run_kind_unknown": "banana",
    **dict.fromkeys(["metrics_empty", "metrics_list", "glb_half", "log_garbage"], ""),
}


def run_cases(c: Corpus) -> None:
    damages = {
        "checkpoint_truncated": _ckpt(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
        "checkpoint_empty": _ckpt(lambda p: p.write_bytes(b"")),
        "checkpoint_garbage": _ckpt(lambda p: p.write_bytes(b"\x10" + b"x" * 100)),
        "checkpoint_header_huge": _ckpt(lambda p: p.write_bytes(struct.pack("<Q", 2**60) + b"{}")),
        "checkpoint_nan": _ckpt(_nan_weights),
        "checkpoint_wrong_shape": _ckpt(_shape_weights),
        "checkpoint_missing_tensor": _ckpt(_drop_tensor),
        "checkpoints_gone": lambda r: shutil.rmtree(r / "checkpoints"),
        "step_file_no_step": _ckpt_json(lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "step"})),
        "step_file_garbage": _ckpt_json(lambda t: "{"),
        "step_file_step_text": _ckpt_json(lambda t: json.dumps({**json.loads(t), "step": "many"})),
        "generator_state_bad": _ckpt_json(lambda t: _bad_generator(t)),
        "latest_garbage": lambda r: (r / "checkpoints" / "latest.json").write_text("nope"),
        "config_missing": lambda r: (r / "config.yaml").unlink(),
        "config_garbage": lambda r: (r / "config.yaml").write_text("trainer: [\n"),
        "config_unknown_key": lambda r: (r / "config.yaml").write_text((r / "config.yaml").read_text() + "zzz: 1\n"),
        "run_json_missing": lambda r: (r / "run.json").unlink(),
        "run_json_garbage": lambda r: (r / "run.json").write_text("[1"),
        "run_kind_unknown": lambda r: (r / "run.json").write_text(json.dumps({"kind": "banana"})),
        "metrics_empty": lambda r: (r / "metrics.json").write_text(""),
        "metrics_list": lambda r: (r / "metrics.json").write_text("[]"),
        "glb_half": lambda r: _half(r / "export" / "model.glb"),
        "log_garbage": lambda r: (r / "log.jsonl").write_text("{{{\n"),
    }
    ok_for = {  # damage -> commands that may still succeed (the run's result is intact)
        "metrics_empty": {"eval", "export", "render"},  # metrics are recomputed; the file is written afresh
        "metrics_list": {"eval", "export", "render"},
        "glb_half": {"eval", "export", "render"},
        "log_garbage": {"eval", "export", "render"},
        "run_json_missing": {"eval", "export", "render", "resume"},  # the kind comes from config.yaml then
        "checkpoints_gone": {"resume"},  # restarts from step 0
    }
    for name, damage in damages.items():
        for command in ("eval", "export", "render", "resume"):
            expect = "ok" if command in ok_for.get(name, ()) else "error"
            if name in ("metrics_empty", "metrics_list", "glb_half", "log_garbage") and command == "resume":
                expect = "ok"  # a finished run resumed: nothing to do, or done again
            c.add(f"run/{name}/{command}", _damaged(damage, command), expect=expect, fragment=RUN_FRAGMENTS[name])
    c.add(
        "run/fit_resumed_as_generate",
        lambda w, fx: ["generate", "--resume", str(copy_run(w, fx.fit_run))],
        fragment="fit",
    )
    c.add(
        "run/generate_resumed_as_fit", lambda w, fx: ["fit", "--resume", str(copy_run(w, fx.run))], fragment="generate"
    )
    c.add(
        "run/generate_resumed_as_edit",
        lambda w, fx: ["edit", "--resume", str(copy_run(w, fx.run))],
        fragment="generate",
    )
    c.add("run/resume_while_running", _locked_resume, fragment="in use")
    c.add("run/resume_missing", lambda w, fx: ["generate", "--resume", str(w / "nope")], fragment="not a run directory")
    c.add("run/resume_file", lambda w, fx: ["generate", "--resume", str(_touch(w / "f"))], fragment="not a run")
    c.add("run/eval_missing", lambda w, fx: ["eval", str(w / "nope")], fragment="nope")
    c.add("run/eval_empty_dir", lambda w, fx: ["eval", str(_mkdir(w / "empty"))], fragment="not a run")
    c.add("run/eval_scene_dir", lambda w, fx: ["eval", str(fx.scene)], fragment="not a run")
    c.add(
        "run/export_fit_run_glb",
        lambda w, fx: ["export", str(fx.fit_run), "--format", "splat", "--out", str(w / "x.splat")],
        expect="ok",
    )


HELD_LOCKS: list = []  # run locks this process holds for `_locked_resume` (as a running t3d would)


def _locked_resume(work: Path, fx: Fixtures) -> list[str]:
    """A run another process is working on (this one holds its lock) resumed: refused, not interleaved."""
    from ..session import lock_run

    run = copy_run(work, fx.run)
    HELD_LOCKS.append(lock_run(run))
    return ["generate", "--resume", str(run)]


def _bad_generator(text: str) -> str:
    meta = json.loads(text)
    for key in list(meta):
        if "generator" in key or "rng" in key:
            meta[key] = [1, 2, 3]
    return json.dumps(meta)


def _half(path: Path) -> None:
    if path.exists():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def build_corpus() -> list[Case]:
    corpus = Corpus()
    for add in (
        ply_cases, transforms_cases, colmap_txt_cases, colmap_bin_cases, llff_cases, override_cases,
        silent_setting_cases, option_cases, output_cases, run_cases,
    ):  # fmt: skip
        add(corpus)
    return corpus.cases
