"""The `t3d view` page: one self-contained HTML file (no network, works from file://) that shows a run's 3D
Gaussians (Spark) and its exported mesh (three.js) in one orbitable 3D view with a toggle between them, its
turntable, metrics and resolved config. The script is the prebuilt `assets/viewer.bundle.js` (tools/build_viewer.sh
makes it from tools/viewer/viewer.js and the npm packages pinned in tools/package-lock.json); the page carries it
gzip-compressed and base64-encoded, with the splats (.spz) and the mesh (.glb) as base64 blocks."""

from __future__ import annotations

import base64
import gzip
import html
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from ..cameras import Cameras, orbit_cameras
from ..errors import ThreeDistillError
from ..utils.files import atomic_write, check_writable

BUNDLE = Path(__file__).with_name("assets") / "viewer.bundle.js"
PAGE_NAME = "viewer.html"


@dataclass
class ViewCamera:
    """The page's default camera, the project's orbit camera (`cameras.orbit_cameras`) around `target`: degrees,
    scene units, vertical field of view `fovy`. `cameras()` renders the same view in Python."""

    azimuth: float = 30.0
    elevation: float = 15.0
    radius: float = 2.9
    fovy: float = 40.0
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    near: float = 0.05
    far: float = 100.0

    def cameras(self) -> Cameras:
        cams = orbit_cameras(self.azimuth, self.elevation, self.radius, self.fovy)
        cams.c2w[:, :3, 3] += torch.tensor(self.target, dtype=cams.c2w.dtype)
        return cams


@dataclass
class PageContent:
    """What one page shows: `splats` (.spz bytes) and / or `mesh` (.glb bytes) in the 3D view, `media` the
    turntable and other pictures as (caption, MIME type, bytes), `metrics` the run's metrics.json, `config` its
    resolved config.yaml text, `notes` lines about what is missing."""

    title: str
    kind: str
    camera: ViewCamera = field(default_factory=ViewCamera)
    splats: bytes | None = None
    mesh: bytes | None = None
    media: list[tuple[str, str, bytes]] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    config: str = ""
    notes: list[str] = field(default_factory=list)
    background: str = "#f4f4f4"
    default_mode: str = "splats"  # what the 3D view shows first when it has both: "splats" or "mesh"


@lru_cache(maxsize=1)
def bundle_gzip_base64() -> str:
    """The viewer script, gzip-compressed (deterministic: no timestamp) and base64-encoded."""
    if not BUNDLE.is_file():
        raise ThreeDistillError(f"the viewer's script {BUNDLE} is missing; rebuild it with tools/build_viewer.sh")
    return base64.b64encode(gzip.compress(BUNDLE.read_bytes(), compresslevel=9, mtime=0)).decode("ascii")


def check_page_path(out: str | Path) -> Path:
    """`out` when an HTML page can be written there, else a one-line error (checked before anything is loaded)."""
    out = Path(out)
    if out.is_dir():
        raise ThreeDistillError(f"--out {out} is a folder; give a file name such as {out / PAGE_NAME}")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ThreeDistillError(f"--out {out} does not end in .html; name it {out.with_suffix('.html').name}")
    return check_writable(out)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_script(value) -> str:
    """JSON safe inside a <script> element (no `</` can close it)."""
    return json.dumps(value, sort_keys=True).replace("</", "<\\/")


def _metric_rows(metrics: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _metric_rows(value, f"{name}.")
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        else:
            text = json.dumps(value) if isinstance(value, list) else str(value)
            rows.append((name, text if len(text) <= 200 else text[:200] + " ..."))
    return rows


def _media_html(caption: str, mime: str, data: bytes) -> str:
    src = f"data:{mime};base64,{_b64(data)}"
    tag = (
        f'<video src="{src}" autoplay loop muted playsinline controls></video>'
        if mime.startswith("video/")
        else f'<img src="{src}" alt="{html.escape(caption)}">'
    )
    return f"<figure>{tag}<figcaption>{html.escape(caption)}</figcaption></figure>"


# Nothing may be loaded from anywhere but the page itself: data: and blob: URLs only (Spark's worker and WebAssembly
# are blobs made from the script; three.js decodes the glb's texture through a blob).
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval' blob:; worker-src blob: data:; "
    "img-src data: blob:; media-src data: blob:; style-src 'unsafe-inline'; connect-src data: blob:"
)
STYLE = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; background: #fff; display: flex; height: 100vh; }
#view { flex: 1; position: relative; min-width: 0; overflow: hidden; }
#view canvas { display: block; }
#bar { position: absolute; top: 8px; left: 8px; display: flex; gap: 4px; }
#bar button { padding: 4px 10px; border: 1px solid #999; background: #fff; border-radius: 4px; cursor: pointer; }
#bar button.on { background: #333; color: #fff; }
#bar button:disabled { opacity: .4; cursor: default; }
#error { position: absolute; bottom: 8px; left: 8px; color: #b00; }
aside { width: 360px; overflow-y: auto; padding: 12px; border-left: 1px solid #ddd; }
h1 { font-size: 16px; margin: 0 0 8px; } h2 { font-size: 14px; margin: 16px 0 6px; }
table { border-collapse: collapse; width: 100%; } td { padding: 1px 4px; border-bottom: 1px solid #eee; }
td:last-child { text-align: right; font-variant-numeric: tabular-nums; word-break: break-all; }
pre { font-size: 11px; background: #f6f6f6; padding: 6px; overflow-x: auto; }
figure { margin: 0 0 8px; } figure video, figure img { width: 100%; } figcaption { font-size: 12px; color: #666; }
.note { color: #a60; }
"""

BOOT = """
(async () => {
  const text = atob(document.getElementById("t3d-bundle").textContent.replace(/\\s+/g, ""));
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const code = await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  (0, eval)(code);
})().catch((err) => { document.getElementById("error").textContent = "viewer error: " + err; });
"""


def render_page(content: PageContent) -> str:
    """The page's HTML text."""
    meta = {
        "title": content.title,
        "kind": content.kind,
        "camera": asdict(content.camera),
        "background": content.background,
        "has_splats": content.splats is not None,
        "has_mesh": content.mesh is not None,
        "default_mode": content.default_mode,
    }
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _metric_rows(content.metrics)
    )
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in content.notes)
    media = "".join(_media_html(*m) for m in content.media)
    blocks = [f'<script type="application/json" id="t3d-meta">{_json_script(meta)}</script>']
    if content.splats is not None:
        blocks.append(f'<script type="application/octet-stream" id="t3d-splats">{_b64(content.splats)}</script>')
    if content.mesh is not None:
        blocks.append(f'<script type="application/octet-stream" id="t3d-mesh">{_b64(content.mesh)}</script>')
    blocks.append(f'<script type="application/octet-stream" id="t3d-bundle">{bundle_gzip_base64()}</script>')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{html.escape(content.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<main id="view">
<div id="bar"><button data-mode="splats">Splats</button><button data-mode="mesh">Mesh</button>\
<button id="home">Reset view</button></div>
<div id="error"></div>
</main>
<aside>
<h1>{html.escape(content.title)}</h1>
<p>{html.escape(content.kind)} run &middot; drag to orbit, scroll to zoom, right-drag to pan</p>
{notes}{media}
<h2>Metrics</h2>
<table>{rows or '<tr><td colspan="2">no metrics.json</td></tr>'}</table>
<h2>Config</h2>
<pre>{html.escape(content.config)}</pre>
</aside>
{"".join(blocks)}
<script>{BOOT}</script>
</body>
</html>
"""


def write_page(content: PageContent, out: str | Path) -> Path:
    """Write the page (atomically) and return its path."""
    return atomic_write(out, render_page(content).encode("utf-8"))
