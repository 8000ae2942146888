"""Token files on disk, written atomically and trusted only after verification.

    <cache_dir>/<source>-<tokenizer>-<key>/
      train.bin, val.bin   flat token ids (dtype in meta.json), read back as numpy memmaps
      tokenizer.json       the trained BPE (bpe only)
      meta.json            the size and sha256 of every file above, and the corpus description

A directory is built under a temporary name and renamed into place only when complete, so a killed
build leaves no directory that looks finished; one whose files do not match meta.json is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scaling_lab import atomic

FORMAT = 2  # bump when the layout or the tokenization rules change: old caches then miss (2: BPE marker text)
META = "meta.json"
log = logging.getLogger(__name__)


def cache_key(corpus_fingerprint: str, tokenizer_spec: dict[str, Any]) -> str:
    payload = {"format": FORMAT, "corpus": corpus_fingerprint, "tokenizer": tokenizer_spec}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_meta(path: Path) -> dict[str, Any] | None:
    """meta.json of a cache directory whose files all match it; None when missing or corrupt."""
    if not (path / META).exists():
        return None
    try:
        meta = json.loads((path / META).read_text())
        ok = meta["format"] == FORMAT and all(_matches(path / name, entry) for name, entry in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        log.warning("token cache %s is corrupt or stale; rebuilding it", path)
        return None
    return meta


def write(path: Path, files: dict[str, bytes | np.ndarray], meta: dict[str, Any]) -> dict[str, Any]:
    """Write files, then meta.json, into a fresh directory and rename it to path; returns the meta in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache may be shared with other users
        entries = {name: _write_file(tmp / name, memoryview(content).cast("B")) for name, content in files.items()}
        meta = {**meta, "format": FORMAT, "files": entries}
        _write_file(tmp / META, memoryview(json.dumps(meta, indent=2).encode()).cast("B"))
        return _move_into_place(tmp, path, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_tokens(path: Path, meta: dict[str, Any], name: str) -> np.memmap:
    dtype = np.dtype(meta["dtype"])
    return np.memmap(path / name, dtype=dtype, mode="r", shape=(meta["files"][name]["bytes"] // dtype.itemsize,))


def _move_into_place(tmp: Path, path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Rename tmp to path; returns the meta of the copy that ends up there.

    A sound copy already at path was finished by a parallel run (one sweep, many processes) that other runs may be
    reading: it stays, and this build is dropped. Only a corrupt copy is replaced.
    """
    for attempt in range(2):
        if path.exists():
            existing = read_meta(path)
            if existing is not None:
                return existing
            # a directory cannot be renamed over a full one: move the corrupt copy aside first
            trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".trash"))
            os.rename(path, trash / "old")
            shutil.rmtree(trash)
        try:
            os.rename(tmp, path)
            break
        except OSError:
            if attempt:  # a parallel build landed between the check and the rename, twice: give up loudly
                raise
    atomic.fsync(path.parent)
    return meta


def _write_file(path: Path, data: memoryview) -> dict[str, Any]:
    path.write_bytes(data)
    atomic.fsync(path)  # the directory is renamed into place only once every file in it is on disk
    return {"bytes": data.nbytes, "sha256": hashlib.sha256(data).hexdigest()}


def _matches(path: Path, entry: dict[str, Any]) -> bool:
    if path.stat().st_size != entry["bytes"]:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest() == entry["sha256"]
