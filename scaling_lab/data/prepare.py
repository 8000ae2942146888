"""prepare_corpus: from a data config to verified token memmaps, building the cache when needed."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling_lab.data import cache
from scaling_lab.data.config import DataConfig, DataConfigError
from scaling_lab.data.corpus import SplitCorpus, load_documents
from scaling_lab.data.tokenizer import BpeTokenizer, ByteTokenizer, token_dtype

TOKENIZER_FILE = "tokenizer.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenCorpus:
    train: np.memmap
    val: np.memmap
    vocab_size: int
    meta: dict[str, Any]  # what a run record's `data` field holds about the corpus
    built: bool  # True when this call built the cache rather than reading it

    def tokenizer(self) -> ByteTokenizer | BpeTokenizer:
        if self.meta["tokenizer"] == "byte":
            return ByteTokenizer()
        return BpeTokenizer.from_json((Path(self.meta["cache_path"]) / TOKENIZER_FILE).read_text())


def prepare_corpus(data_cfg: Mapping[str, Any]) -> TokenCorpus:
    """Token memmaps for the configured corpus: read from the cache when it verifies, built otherwise."""
    cfg = DataConfig.from_dict(data_cfg)
    try:  # before the corpus is read: a cache that cannot be written would otherwise fail after tokenizing it
        cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataConfigError(f"data.cache_dir={str(cfg.cache_dir)!r} cannot be created ({e.strerror or e})") from e
    docs = load_documents(cfg)
    spec = {"kind": cfg.tokenizer, "vocab_size": cfg.bpe_vocab_size} if cfg.tokenizer == "bpe" else {"kind": "byte"}
    key = cache.cache_key(docs.fingerprint, spec)
    path = cfg.cache_dir / f"{cfg.source}-{cfg.tokenizer}-{key[:16]}"
    meta = cache.read_meta(path)
    built = meta is None
    if built:
        started = time.perf_counter()
        meta = _build(path, docs, cfg, key)
        log.info("built token cache %s in %.1f s", path, time.perf_counter() - started)
    train, val = (cache.open_tokens(path, meta, f"{split}.bin") for split in ("train", "val"))
    return TokenCorpus(train, val, meta["corpus"]["vocab_size"], {**meta["corpus"], "cache_path": str(path)}, built)


def _build(path: Path, docs: SplitCorpus, cfg: DataConfig, key: str) -> dict[str, Any]:
    tokenizer = BpeTokenizer.train(docs.train, cfg.bpe_vocab_size) if cfg.tokenizer == "bpe" else ByteTokenizer()
    train, val = tokenizer.encode_documents(docs.train), tokenizer.encode_documents(docs.val)
    files: dict[str, bytes | np.ndarray] = {"train.bin": train, "val.bin": val}
    if cfg.tokenizer == "bpe":
        files[TOKENIZER_FILE] = tokenizer.to_json().encode()
    corpus = {
        "fingerprint": key,
        "corpus_fingerprint": docs.fingerprint,
        "source": docs.source,
        "tokenizer": cfg.tokenizer,
        "vocab_size": tokenizer.vocab_size,
        "eod_id": tokenizer.eod_id,
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
        "n_documents": len(docs.train) + len(docs.val),
        "n_train_documents": len(docs.train),
        "n_val_documents": len(docs.val),
        "n_duplicates": docs.n_duplicates,
        "val_fraction": cfg.val_fraction,
    }
    return cache.write(path, files, {"dtype": token_dtype(tokenizer.vocab_size).name, "corpus": corpus})
