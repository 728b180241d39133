"""The one I/O layer: local paths and `gs://` URIs alike, over `etils.epath`.

Every file jaxlm reads or writes goes through here, so a run directory or a data directory may be
`gs://bucket/...` on a Cloud TPU pod and a relative path on a laptop. Orbax already speaks epath,
so checkpoints, config.json and metrics share one notion of a path.

Rules the helpers keep:
  * A URI stays a URI: `path('gs://b/x')` is never made absolute (`os.path.abspath` would turn it
    into `<cwd>/gs:/b/x`). Local relative paths are made absolute, so a run directory does not
    move when the working directory does.
  * Whole-file writes are atomic: a reader sees the old file or the new one, never half of one.
    Locally that takes a temporary name and a rename; a Cloud Storage object is atomic by itself
    (it appears when its upload finishes) and a rename there is a copy plus a delete, so URIs are
    written in place.
  * On a multi-process run only process 0 writes shared files; the others wait for them.

Which library carries a `gs://` path is told in docs/design.md, "I/O and Cloud Storage".
"""

from __future__ import annotations

import os
import re
import time
import uuid
from typing import IO, Any

import fsspec.config
import jax
from etils import epath

PathLike = str | os.PathLike
Path = epath.Path

# gcsfs caches directory listings for the life of the process, so a file that another process
# writes after a listing stays invisible here (exists() is False, open() fails): waiting for a
# file process 0 writes would never end. A listing per call costs one request; correctness wins.
fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(p: PathLike) -> bool:
    """Whether `p` names a location by URI (`gs://...`, `s3://...`) rather than a local path."""
    return bool(_URI.match(os.fspath(p)))


def path(first: PathLike, *rest: PathLike) -> Path:
    """Joins path parts into an epath.Path; a URI stays a URI, a local path becomes absolute."""
    head = os.fspath(first)
    if not is_uri(head):
        head = os.path.abspath(os.path.expanduser(head))
    return epath.Path(head, *rest)


def join(first: PathLike, *rest: PathLike) -> str:
    """`path(...)` as a string, for libraries that take `str` (tfds data_dir, SentencePiece)."""
    return os.fspath(path(first, *rest))


def exists(p: PathLike) -> bool:
    """Whether a file or directory exists at `p`."""
    return path(p).exists()


def isdir(p: PathLike) -> bool:
    """Whether `p` is a directory (on Cloud Storage: a prefix with objects under it)."""
    return path(p).is_dir()


def makedirs(p: PathLike) -> Path:
    """Creates directory `p` and its parents if missing; returns it.

    Cloud Storage has no empty directories: there this is a no-op, and the directory exists once
    an object is written under it.
    """
    d = path(p)
    d.mkdir(parents=True, exist_ok=True)
    return d


def listdir(p: PathLike) -> list[str]:
    """Sorted names of the entries of directory `p`."""
    return sorted(child.name for child in path(p).iterdir())


def glob(directory: PathLike, pattern: str) -> list[Path]:
    """Sorted matches of `pattern` under `directory`.

    epath refuses a recursive `**` on Cloud Storage (one request per prefix); name the levels.
    """
    return sorted(path(directory).glob(pattern))


def open(p: PathLike, mode: str = "r") -> IO[Any]:  # pylint: disable=redefined-builtin
    """Opens `p` like the builtin `open` (modes r, w, a, with b). Not atomic: see write_text.

    Append is refused on a URI: gcsfs opens a Cloud Storage object for append by silently
    replacing it, which would keep only the last lines of a metrics file.
    """
    if "a" in mode and is_uri(p):
        raise ValueError(f"cannot append to {os.fspath(p)}: Cloud Storage objects are written "
                         "whole; keep the lines and write the file again, or write new files")
    return path(p).open(mode)


def read_text(p: PathLike) -> str:
    """The contents of text file `p`."""
    return path(p).read_text()


def read_bytes(p: PathLike) -> bytes:
    """The contents of file `p`."""
    return path(p).read_bytes()


def write_bytes(p: PathLike, data: bytes) -> Path:
    """Writes `data` to `p` atomically, creating parent directories; returns the path."""
    dest = path(p)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if is_uri(dest):
        dest.write_bytes(data)  # One object upload: all or nothing, no rename needed.
        return dest
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)  # Atomic on POSIX within one filesystem.
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def write_text(p: PathLike, text: str) -> Path:
    """Writes `text` (UTF-8) to `p` atomically, creating parent directories; returns the path."""
    return write_bytes(p, text.encode("utf-8"))


def remove(p: PathLike, recursive: bool = False) -> None:
    """Removes file `p`, or directory `p` with everything under it when `recursive`."""
    target = path(p)
    if recursive and target.is_dir():
        target.rmtree()
    else:
        target.unlink()


def is_writer(process_index: int | None = None) -> bool:
    """Whether this process writes shared files: process 0 of the run."""
    index = jax.process_index() if process_index is None else process_index
    return index == 0


def wait_for(p: PathLike, timeout_s: float = 600.0, poll_s: float = 1.0) -> Path:
    """Returns once `p` exists; raises TimeoutError naming the path after `timeout_s` seconds."""
    target = path(p)
    deadline = time.monotonic() + timeout_s
    while not target.exists():
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"process {jax.process_index()} waited {timeout_s:g} s for {target}, which "
                "process 0 writes; it is not there. Did process 0 fail, or do the processes "
                "see different paths (a local path on a multi-host run)?"
            )
        time.sleep(poll_s)
    return target


def write_shared_text(
    p: PathLike,
    text: str,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 1.0,
    process_index: int | None = None,
) -> Path:
    """Process 0 writes `text` to `p` atomically; every other process waits until `p` exists.

    For files all processes share (config.json, a trained tokenizer): one writer, and no process
    goes on before the file is complete. Returns the path.
    """
    if is_writer(process_index):
        return write_text(p, text)
    return wait_for(p, timeout_s=timeout_s, poll_s=poll_s)
