"""Files that readers see whole or not at all, and that outlive a crash once written.

Each is written beside its final name, flushed to disk, renamed over that name (atomic on POSIX), and the rename is
flushed too (the directory's fsync): without that last step a power loss can undo a rename that returned.
Records, checkpoints, token caches and the packed launcher's job results all land this way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_bytes(path: Path, data: bytes | memoryview) -> None:
    """`data` at `path`, durably and all at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(tmp: Path, path: Path) -> None:
    """Rename a fully written file `tmp` over `path` (same directory), durably."""
    fsync(tmp)
    os.replace(tmp, path)
    fsync(path.parent)


def fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
