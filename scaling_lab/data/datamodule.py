"""Batches of (x, y) windows over the token memmaps, in an order that a resumed run can re-enter anywhere.

The train stream is cut into windows of block_size + 1 tokens at stride block_size. Global sequence i
is window perm(seed, i // n_windows)[i % n_windows]: a fresh permutation per epoch, seeded only by
(seed, epoch), so sequence i is the same whether a run got there in one go or after a restart.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scaling_lab import accounting, checks
from scaling_lab.data.config import DataConfigError
from scaling_lab.data.prepare import TokenCorpus

_count = functools.partial(checks.count, error=DataConfigError)

# Muennighoff et al. 2023 (Scaling Data-Constrained Language Models, Sec. 5): up to ~4 epochs, repeated tokens
# are worth almost as much as unique ones; beyond that their value decays quickly.
MAX_EPOCHS = 4


class WindowOrder:
    """Global sequence index -> train window index."""

    def __init__(self, n_windows: int, seed: int):
        self.n_windows = n_windows
        self.seed = seed
        # a batch spans at most two epochs, so two permutations in memory suffice
        self.permutation = functools.lru_cache(maxsize=2)(self._permutation)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        epochs, positions = np.divmod(sequences, self.n_windows)
        windows = np.empty_like(sequences)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            windows[mask] = self.permutation(int(epoch))[positions[mask]]
        return windows


class SpreadOrder:
    """Validation sequence index -> window index: `n` windows evenly spaced over all `total` windows of the split,
    the same for every run on the corpus, whatever its seed or budget."""

    def __init__(self, n: int, total: int):
        self.n, self.total = n, total

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        return sequences * self.total // self.n


class WindowBatches(Dataset):
    """Item b is the batch of sequences [b*batch_size, ...) before stop, as (x, y) int64 tensors."""

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, stop: int,
                 window_of: Callable[[np.ndarray], np.ndarray]):
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.stop, self.window_of = stop, window_of
        self.offsets = np.arange(block_size + 1)

    def __len__(self) -> int:
        return math.ceil(self.stop / self.batch_size)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= b < len(self):
            raise IndexError(b)
        first = b * self.batch_size
        sequences = np.arange(first, min(first + self.batch_size, self.stop))
        starts = self.window_of(sequences) * self.block_size
        windows = self.tokens[starts[:, None] + self.offsets].astype(np.int64)
        return torch.from_numpy(windows[:, :-1].copy()), torch.from_numpy(windows[:, 1:].copy())


class TokenDataModule(L.LightningDataModule):
    """Exactly round(tokens / block_size) train sequences and a fixed validation set."""

    def __init__(self, corpus: TokenCorpus, block_size: int, batch_size: int, tokens: int, seed: int,
                 val_tokens: int):
        super().__init__()
        _count("model.block_size", block_size, 1)
        _count("train.batch_size", batch_size, 1)
        _count("train.tokens", tokens, 1)
        _count("seed", seed, 0)
        _count("data.val_tokens", val_tokens, block_size)
        self.corpus, self.block_size, self.batch_size, self.seed = corpus, block_size, batch_size, seed
        self.n_windows = self._windows("train", len(corpus.train))
        self.n_val_windows = self._windows("validation", min(val_tokens + 1, len(corpus.val)))
        # spread over the whole validation split: its first val_tokens would be a file or two of one package
        self.val_order = SpreadOrder(self.n_val_windows, self._windows("validation", len(corpus.val)))
        self.n_sequences = accounting.train_sequences(tokens, block_size)
        self.order = WindowOrder(self.n_windows, seed)

    def _windows(self, split: str, n_tokens: int) -> int:
        """Whole windows of block_size + 1 tokens at stride block_size in the first n_tokens of a split."""
        n = (n_tokens - 1) // self.block_size
        if n < 1:
            raise DataConfigError(
                f"data: the {split} split has {n_tokens} tokens, fewer than one window of model.block_size + 1 = "
                f"{self.block_size + 1} ({self.corpus.meta['source']}, val_fraction={self.corpus.meta['val_fraction']})"
            )
        return n

    @property
    def tokens_trained(self) -> int:
        return self.n_sequences * self.block_size

    @property
    def epochs(self) -> float:
        return self.tokens_trained / len(self.corpus.train)

    @property
    def repeated(self) -> bool:
        """Some training window is used more than once: the run sees part of its data again."""
        return self.n_sequences > self.n_windows

    @property
    def repetition_warning(self) -> str | None:
        if self.epochs <= MAX_EPOCHS:
            return None
        larger = "data=python (all installed Python source)" if self.corpus.meta["source"].startswith("stdlib:") \
            else "a larger corpus"
        return (f"{self.epochs:.1f} epochs over the corpus (> {MAX_EPOCHS}: repeated tokens lose value, "
                f"Muennighoff et al. 2023); use {larger} or a smaller budget")

    @property
    def steps(self) -> int:
        return math.ceil(self.n_sequences / self.batch_size)

    @property
    def val_tokens_used(self) -> int:
        return self.n_val_windows * self.block_size

    @property
    def record_meta(self) -> dict[str, Any]:
        """The run record's `data` field."""
        return {**self.corpus.meta, "epochs": self.epochs, "repeated": self.repeated,
                "val_tokens_used": self.val_tokens_used}

    def train_dataloader(self) -> DataLoader:
        batches = WindowBatches(
            self.corpus.train, self.block_size, self.batch_size, self.n_sequences, self.order
        )
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        batches = WindowBatches(self.corpus.val, self.block_size, self.batch_size, self.n_val_windows,
                                self.val_order)
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)
