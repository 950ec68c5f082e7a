"""The one JSON reading path and the one atomic-write helper.

`read_json`: every JSON file the project reads (scenes, run folders, checkpoints, prior indexes) comes through
here, so a malformed one is always a one-line error naming the file: syntax, nesting too deep, integers too long,
a UTF-8 byte-order mark (accepted), a top level of the wrong type, a file too large.

`atomic_write` / `atomic_path`: a file is written next to its destination under a temporary name and renamed over
it, so a kill mid-write leaves the old file or none, never half of one (caches, checkpoints, exports, metrics)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import ThreeDistillError

MAX_JSON_BYTES = 256 << 20  # a transforms.json of 100k frames is ~50 MB


def read_json(path: str | Path, what: str = "JSON file", expect: type | None = dict, error=ThreeDistillError):
    """The JSON value in `path` (a dict unless `expect` says otherwise; None: any), or one line `error` naming
    the file and what is wrong with it."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path}: {path.stat().st_size >> 20} MB is too large for a {what}")
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a {what}") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}), so not a {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except RecursionError:
        raise error(f"{path}: invalid {what}: arrays or objects nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise error(f"{path}: invalid JSON ({str(err).splitlines()[0]})") from None
    if expect is not None and not isinstance(value, expect):
        raise error(
            f"{path}: expected a JSON {'object' if expect is dict else expect.__name__} at the top level, "
            f"found {type(value).__name__}"
        )
    return value


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that takes a file name (safetensors, numpy, trimesh); renamed
    over `path` when the block ends without an exception, removed otherwise. The temporary name keeps the
    suffix, for writers that choose a format by it (np.savez would otherwise add .npz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` (str as UTF-8) to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_json(path: str | Path, value, indent: int | None = 2) -> Path:
    """`value` as JSON (characters kept, not escaped), written atomically."""
    return atomic_write(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


def check_writable(out: Path) -> Path:
    """`out` once its folder exists and a file can be made in it, else a one-line error naming why."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ThreeDistillError(f"cannot write {out}: {err.strerror or err} (making {out.parent})") from None
    try:
        with tempfile.TemporaryFile(dir=out.parent):  # root passes os.access checks where it still cannot write
            pass
    except OSError as err:
        raise ThreeDistillError(f"cannot write {out}: {err.strerror or err} (in {out.parent})") from None
    return out
