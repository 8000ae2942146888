"""The `data` config node, checked once so that every later failure names the key to fix."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaling_lab import checks

SOURCES = ("stdlib", "python", "hf")
TOKENIZERS = ("byte", "bpe")
SAMPLE_BY = ("line", "paragraph", "document")
# Hugging Face builders that read the user's own files, which must then exist.
LOCAL_BUILDERS = ("text", "json", "parquet", "csv")
KEYS = {
    "source", "tokenizer", "bpe_vocab_size", "val_fraction", "val_tokens", "cache_dir", "max_docs",
    "max_chars", "stdlib_root", "path", "name", "data_files", "split", "text_field", "streaming",
    "sample_by", "site_dirs",
}


class DataConfigError(ValueError):
    """A data config that cannot be used; the one-line message names the config key."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("SCALING_LAB_CACHE") or "~/.cache/scaling-lab").expanduser()


@dataclass(frozen=True)
class DataConfig:
    source: str
    tokenizer: str
    val_fraction: float
    cache_dir: Path
    bpe_vocab_size: int | None = None
    max_docs: int | None = None
    max_chars: int | None = None
    stdlib_root: Path | None = None
    site_dirs: tuple[Path, ...] | None = None
    path: str | None = None
    name: str | None = None
    data_files: tuple[str, ...] | None = None
    split: str = "train"
    text_field: str = "text"
    streaming: bool = True
    sample_by: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DataConfig:
        unknown = sorted(set(raw) - KEYS)
        if unknown:
            raise DataConfigError(f"data.{unknown[0]} is not a data config key; known: {', '.join(sorted(KEYS))}")
        source = _choice(raw, "source", SOURCES)
        tokenizer = _choice(raw, "tokenizer", TOKENIZERS)
        val_fraction = checks.number("data.val_fraction", raw.get("val_fraction"), "(0, 1)", error=DataConfigError)
        vocab = _count(raw, "bpe_vocab_size") if tokenizer == "bpe" else None
        if vocab is not None and vocab <= 257:
            raise DataConfigError(f"data.bpe_vocab_size must be > 257 (256 bytes + end-of-document), got {vocab}")
        if tokenizer == "bpe" and vocab is None:
            raise DataConfigError("data.bpe_vocab_size is required when data.tokenizer=bpe")
        cache_dir = Path(raw["cache_dir"]).expanduser() if raw.get("cache_dir") else default_cache_dir()
        common = dict(
            source=source, tokenizer=tokenizer, val_fraction=float(val_fraction), cache_dir=cache_dir,
            bpe_vocab_size=vocab, max_docs=_count(raw, "max_docs"), max_chars=_count(raw, "max_chars"),
        )
        if source == "stdlib":
            return cls(**common, stdlib_root=_stdlib_root(raw.get("stdlib_root")))
        if source == "python":
            return cls(**common, stdlib_root=_stdlib_root(raw.get("stdlib_root")), site_dirs=_site_dirs(raw))
        return cls(**common, **_hf_fields(raw))


def _hf_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    path = raw.get("path")
    if not path or not isinstance(path, str):
        raise DataConfigError(
            "data.path is required when data.source=hf: a hub dataset name, "
            "or text/json/parquet/csv with data.data_files"
        )
    data_files = raw.get("data_files")
    if isinstance(data_files, str):
        data_files = (data_files,)
    elif data_files is not None:
        data_files = tuple(str(f) for f in data_files)
    if path in LOCAL_BUILDERS:
        if not data_files:
            raise DataConfigError(f"data.data_files is required when data.path={path!r}")
        for pattern in data_files:
            if not glob.glob(os.path.expanduser(pattern)):
                raise DataConfigError(f"data.data_files: {pattern} does not exist")
        data_files = tuple(os.path.expanduser(f) for f in data_files)
    sample_by = raw.get("sample_by")
    if sample_by is not None and (path != "text" or sample_by not in SAMPLE_BY):
        raise DataConfigError(f"data.sample_by={sample_by!r} needs data.path=text and one of {', '.join(SAMPLE_BY)}")
    fields = dict(
        path=path, name=raw.get("name"), data_files=data_files, split=raw.get("split") or "train",
        text_field=raw.get("text_field") or "text", streaming=bool(raw.get("streaming", True)), sample_by=sample_by,
    )
    for key in ("name", "split", "text_field"):
        if fields[key] is not None and not isinstance(fields[key], str):
            raise DataConfigError(f"data.{key} must be a string, got {fields[key]!r}")
    return fields


def _stdlib_root(value: Any) -> Path | None:
    if value is None:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataConfigError(f"data.stdlib_root={str(value)!r} is not a directory")
    return root


def _site_dirs(raw: Mapping[str, Any]) -> tuple[Path, ...] | None:
    value = raw.get("site_dirs")
    if value is None:
        return None
    dirs = (value,) if isinstance(value, str) else tuple(value)
    for folder in dirs:
        if not Path(str(folder)).expanduser().is_dir():
            raise DataConfigError(f"data.site_dirs: {str(folder)!r} is not a directory")
    return tuple(Path(str(folder)).expanduser() for folder in dirs) or None


def _choice(raw: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = raw.get(key)
    if value not in allowed:
        raise DataConfigError(f"data.{key}={value!r} is not one of {', '.join(allowed)}")
    return value


def _count(raw: Mapping[str, Any], key: str) -> int | None:
    return checks.count(f"data.{key}", raw.get(key), besides=(None,), error=DataConfigError)
