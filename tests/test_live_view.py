"""The live viewer (`--viewer`): a real websocket client receives the run's splats, the captured cameras and the
loss curve; a run is bit-identical with and without it; it listens on 127.0.0.1; one-line errors."""

import asyncio
import socket
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_cli import assert_one_line_error, t3d

from threedistill.errors import ThreeDistillError
from threedistill.workflows.live_view import LiveViewer, LiveViewerOptions, start_viewer

viser = pytest.importorskip("viser")

FAST = ["gaussians.num_points=300", "trainer.batch_size=1", "trainer.resolution=16", "trainer.preview_every=0",
        "trainer.checkpoint_every=0", "export=[]", "device=cpu"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def receive_scene(port: int, host: str = "127.0.0.1", quiet_seconds: float = 1.5) -> tuple[list[dict], list[bytes]]:
    """What a browser gets on connecting: viser's frames (documented in viser/infra/_infra.py: uint64 sizes, a
    zstd-compressed msgpack payload, then 8-byte aligned binary buffers), decoded into messages and buffers."""
    import msgspec
    import websockets
    import zstandard

    async def client():
        messages, buffers = [], []
        uri = f"ws://{host}:{port}"
        async with websockets.connect(uri, subprotocols=[f"viser-v{viser.__version__}"], max_size=None) as ws:
            while True:
                try:
                    frame = await asyncio.wait_for(ws.recv(), quiet_seconds)
                except asyncio.TimeoutError:
                    return messages, buffers
                size, packed = int.from_bytes(frame[:8], "little"), int.from_bytes(frame[8:16], "little")
                inner = msgspec.msgpack.decode(
                    zstandard.ZstdDecompressor().decompress(frame[16 : 16 + packed], max_output_size=size)
                )
                offset = 16 + packed
                for length in inner["binaryBufferLengths"]:
                    offset += -offset % 8
                    buffers.append(frame[offset : offset + length])
                    offset += length
                messages += inner["messages"]

    return asyncio.run(client())


def tiny_gaussians(n: int = 40):
    from threedistill.representations.gaussians import Gaussians, GaussiansConfig

    gen = torch.Generator().manual_seed(0)
    points, colours = torch.rand(n, 3, generator=gen) - 0.5, torch.rand(n, 3, generator=gen)
    return Gaussians.from_points(points, colours, GaussiansConfig(num_points=n))


def test_a_real_client_receives_the_splats_the_cameras_and_the_loss_curve(tmp_path):
    from threedistill.scenes import load_scene
    from threedistill.toyworld.capture import write_captured_scene

    scene = load_scene(write_captured_scene("three", tmp_path / "s", n_views=4, width=24, height=18))
    model = tiny_gaussians(40)
    viewer = start_viewer(LiveViewerOptions(port=free_port(), every=5), total_steps=10, scene=scene, log=lambda s: None)
    try:
        for step in range(1, 6):
            viewer.update(step, {"loss": 1.0 / step}, model)
        messages, buffers = receive_scene(viewer.port)
    finally:
        viewer.close()
    by_type = {}
    for m in messages:
        by_type.setdefault(m["type"], []).append(m)
    splats = [m for m in by_type["GaussianSplatsMessage"] if m["name"] == "/model"]
    data = buffers[splats[-1]["props"]["buffer"]["__binary_index"]]
    assert len(data) == 40 * 32  # viser packs a splat into 8 uint32s: all 40 arrived
    centres = np.frombuffer(data, dtype="<f4").reshape(40, 8)[:, :3]
    assert np.allclose(centres, model.means.detach().numpy(), atol=1e-6)  # where our Gaussians are
    frustums = [m["name"] for m in by_type["CameraFrustumMessage"]]
    assert frustums == [f"/cameras/{i:04d}" for i in range(len(scene))]
    plot = by_type["GuiUplotMessage"][-1]["props"]["data"]
    updates = [m["updates"]["data"] for m in by_type.get("GuiUpdateMessage", []) if "data" in m.get("updates", {})]
    steps, losses = (np.frombuffer(buffers[d["__binary_index"]], dtype=d["dtype"]) for d in (updates or [plot])[-1])
    assert steps.tolist() == [1, 2, 3, 4, 5] and losses == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    assert any("step 5 / 10" in str(m.get("props", {}).get("_markdown", "")) for m in messages)


def test_a_run_is_bit_identical_with_and_without_the_live_viewer(tmp_path):
    from threedistill.workflows.generate import generate

    runs = []
    for name, viewer in (("plain", None), ("viewed", LiveViewerOptions(port=free_port(), every=2))):
        run = generate(
            prompt="a red cone", steps=6, seed=3, out=str(tmp_path / name), overrides=FAST, progress=False,
            log=lambda s: None, viewer=viewer,
        )  # fmt: skip
        runs.append(load_file(str(next((run.dir / "checkpoints").glob("step_*.safetensors")))))
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_the_viewer_listens_on_loopback_only_unless_asked():
    viewer = LiveViewer(LiveViewerOptions(port=free_port()), total_steps=1, log=lambda s: None)
    try:
        address = socket.gethostbyname(socket.gethostname())
        assert receive_scene(viewer.port, quiet_seconds=0.5)[0]  # 127.0.0.1 answers
        if not address.startswith("127."):  # the machine's own address is refused
            with pytest.raises(OSError):
                socket.create_connection((address, viewer.port), timeout=2).close()
    finally:
        viewer.close()


def test_without_viser_the_viewer_is_a_one_line_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "viser", None)
    with pytest.raises(ThreeDistillError, match=r"--viewer needs viser, which is not installed: pip install"):
        LiveViewer(LiveViewerOptions(), total_steps=1)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--viewer-port", "70000"], "--viewer-port must be 0..65535, got 70000"),
        (["--viewer-every", "0"], "--viewer-every must be positive, got 0"),
    ],
)
def test_bad_viewer_options_are_one_line_errors(tmp_path, args, fragment):
    assert_one_line_error(t3d("generate", "--prompt", "a red cone", "--viewer", *args, cwd=tmp_path), fragment)
