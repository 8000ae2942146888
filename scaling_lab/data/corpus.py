"""Documents from a source, de-duplicated and split into train / validation by document.

The split is a pure function of each document's key, so adding or removing other documents never
moves a document between splits: the key is the relative path for the stdlib source, `site-packages/` plus
the path inside its site-packages (or dist-packages) directory for installed packages (source `python`: the
same file of the same package gets the same split on every machine and Python version, whatever else is
installed, and the stdlib files split exactly as in source `stdlib`), and the content hash for Hugging Face
records (which have no stable name).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import platform
import site
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scaling_lab.data.config import DataConfig, DataConfigError

# Third-party packages installed into the interpreter are not the standard library, and differ per machine.
EXCLUDED_DIRS = {"site-packages", "dist-packages"}
SITE_KEY = "site-packages"  # key prefix of installed packages' files, the same for dist-packages
Document = tuple[str | None, str]  # (split key or None for "use the content hash", text)


@dataclass(frozen=True)
class SplitCorpus:
    train: list[str]
    val: list[str]
    fingerprint: str  # sha256 over the documents' content, in order, with their split
    source: str
    n_duplicates: int


def load_documents(cfg: DataConfig) -> SplitCorpus:
    if cfg.source in ("stdlib", "python"):
        root = cfg.stdlib_root or Path(sysconfig.get_paths()["stdlib"])
        docs, source = python_files(root), f"stdlib:{root} (python {platform.python_version()})"
        if cfg.source == "python":
            sites = list(cfg.site_dirs or site_packages())
            docs = itertools.chain(docs, *(python_files(d, key_prefix=f"{SITE_KEY}/") for d in sites))
            source = f"python:{root} + {' + '.join(map(str, sites))} (python {platform.python_version()})"
    else:
        docs, source = hf_documents(cfg), _hf_description(cfg)
    if cfg.max_docs or cfg.max_chars:
        source += f" max_docs={cfg.max_docs} max_chars={cfg.max_chars}"
    return split_documents(capped(docs, cfg.max_docs, cfg.max_chars), cfg.val_fraction, source)


def python_files(root: Path, key_prefix: str = "") -> Iterator[Document]:
    """Every *.py file below root (not inside a site-packages / dist-packages below it, nor pip's __editable__
    finders), in path order, keyed by key_prefix + its relative path."""
    paths = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIRS]
        # pip's __editable__ finders hold the path of a checkout, not code: with them two identical installs in
        # different places would be different corpora
        paths += [Path(folder, f) for f in files if f.endswith(".py") and not f.startswith("__editable__")]
    for path in sorted(paths):
        # a few stdlib test files are deliberately not UTF-8; replacing keeps byte and BPE tokenizers in step
        yield key_prefix + path.relative_to(root).as_posix(), path.read_bytes().decode("utf-8", errors="replace")


def site_packages() -> list[Path]:
    """The running interpreter's package directories (site-packages / dist-packages, the user's own if enabled),
    each once however many names it has."""
    found = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    unique: dict[Path, Path] = {}
    for folder in map(Path, found):
        if folder.is_dir():
            unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def hf_documents(cfg: DataConfig) -> Iterator[Document]:
    import datasets  # slow to import; only this source needs it

    extra = {"sample_by": cfg.sample_by} if cfg.sample_by else {}
    try:
        dataset = datasets.load_dataset(
            cfg.path, name=cfg.name, data_files=list(cfg.data_files) if cfg.data_files else None, split=cfg.split,
            streaming=cfg.streaming, cache_dir=str(cfg.cache_dir / "hf-datasets"), **extra,
        )
    except Exception as e:  # hub, builder and file errors all come back as "this data config does not load"
        raise DataConfigError(f"data.path={cfg.path!r} does not load: {type(e).__name__}: {_first_line(e)}") from e
    if dataset.column_names is not None and cfg.text_field not in dataset.column_names:
        raise DataConfigError(
            f"data.text_field={cfg.text_field!r} is not a column of {cfg.path}; "
            f"columns: {', '.join(dataset.column_names)}"
        )
    for batch in dataset.select_columns([cfg.text_field]).iter(batch_size=1000):
        for text in batch[cfg.text_field]:
            if text is not None and not isinstance(text, str):
                kind = type(text).__name__
                raise DataConfigError(f"data.text_field={cfg.text_field!r} holds {kind} values, not text")
            yield None, text or ""


def capped(docs: Iterable[Document], max_docs: int | None, max_chars: int | None) -> Iterator[Document]:
    """Stop after max_docs documents, or after the document that reaches max_chars characters."""
    chars = 0
    for i, doc in enumerate(docs):
        if (max_docs and i >= max_docs) or (max_chars and chars >= max_chars):
            return
        chars += len(doc[1])
        yield doc


def split_documents(docs: Iterable[Document], val_fraction: float, source: str) -> SplitCorpus:
    """Drop empty documents and repeats of earlier content, then assign each document by a hash of its key."""
    seen: set[bytes] = set()
    train: list[str] = []
    val: list[str] = []
    fingerprint = hashlib.sha256()
    duplicates = 0
    for key, text in docs:
        if not text:
            continue
        digest = hashlib.sha256(text.encode("utf-8", errors="replace")).digest()
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        held_out = in_validation(key or digest.hex(), val_fraction)
        (val if held_out else train).append(text)
        fingerprint.update((b"V" if held_out else b"T") + digest)
    for name, split in (("train", train), ("validation", val)):
        if not split:
            raise DataConfigError(
                f"data.val_fraction={val_fraction} leaves the {name} split empty "
                f"({len(seen)} unique documents in {source})"
            )
    return SplitCorpus(train, val, fingerprint.hexdigest(), source, duplicates)


def in_validation(key: str, val_fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return bucket < val_fraction * 2**64


def _hf_description(cfg: DataConfig) -> str:
    parts = [f"hf:{cfg.path}" + (f"/{cfg.name}" if cfg.name else "")]
    parts += [f"split={cfg.split}", f"text_field={cfg.text_field}"]
    if cfg.data_files:
        parts.append("data_files=" + ",".join(cfg.data_files))
    if cfg.sample_by:
        parts.append(f"sample_by={cfg.sample_by}")
    return " ".join(parts)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]
