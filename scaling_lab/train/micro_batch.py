"""How many sequences go through one forward/backward: train.micro_batch_size (auto | null | an integer).

train.batch_size stays the sequences per optimizer step; micro-batches accumulate gradients up to it. `auto` on CUDA
measures the peak memory of a forward + backward at two micro-batches, extrapolates linearly (activations grow
with the sequences, weights and gradients do not) and takes the largest micro-batch that fits this run's share of
the device: free memory / trainer.runs_per_device, less a safety margin and the AdamW moments not yet allocated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from scaling_lab.train.run import ConfigError

SAFETY = 0.85  # of this run's share: allocator fragmentation, torch.compile's own buffers, the validation pass


def resolve(setting: int | str | None, batch: int) -> int | None:
    """The micro-batch when the config fixes it (null = the whole batch); None when `auto` must measure."""
    if setting is None:
        return batch
    if setting == "auto":
        return None
    return min(int(setting), batch)


def balanced(largest: int, batch: int) -> int:
    """Fewest micro-batches of at most `largest` sequences, as even as possible (one compiled shape, mostly)."""
    largest = max(1, min(largest, batch))
    return math.ceil(batch / math.ceil(batch / largest))


def largest_fitting(probes: dict[int, float], budget: float, extra: float) -> int:
    """Largest m with peak(m) + extra <= budget, peak linear through two measured {micro-batch: peak bytes}."""
    (m1, peak1), (m2, peak2) = sorted(probes.items())
    per_sequence = max((peak2 - peak1) / (m2 - m1), 1.0)
    fixed = peak1 - per_sequence * m1 + extra
    fits = math.floor((budget - fixed) / per_sequence)
    if fits < 1:
        raise ConfigError(f"train.micro_batch_size=auto: one sequence needs {(fixed + per_sequence) / 2**30:.2f} GiB, "
                          f"this run's share of the device is {budget / 2**30:.2f} GiB (trainer.runs_per_device)")
    return fits


def probe_sizes(batch: int, block_size: int, loss_chunk_rows: int | None) -> tuple[int, int]:
    """Two micro-batches to measure: where the fused loss's chunk is full (its memory stops growing), unless the
    batch is smaller than that."""
    first = max(1, min(math.ceil((loss_chunk_rows or 1) / block_size), batch // 2))
    return first, 2 * first


def measure_cuda(step: Callable[[int], None], device: torch.device, runs_per_device: int, optimizer_bytes: float,
                 batch: int, sizes: tuple[int, int]) -> int:
    """The `auto` micro-batch on a CUDA device; `step(m)` runs one forward + backward on m sequences (eagerly:
    compiled code needs no more memory, so the estimate errs on the safe side)."""
    free, _ = torch.cuda.mem_get_info(device)
    probes = {}
    for m in sizes:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        try:
            step(m)
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(f"train.micro_batch_size=auto: a probe step of {m} sequences ran out of device memory; "
                              "set train.micro_batch_size, or lower trainer.runs_per_device") from None
        torch.cuda.synchronize(device)
        probes[m] = torch.cuda.max_memory_allocated(device) - base
    torch.cuda.empty_cache()
    return choose(probes, free, runs_per_device, optimizer_bytes, batch)


def choose(probes: dict[int, float], free: float, runs_per_device: int, optimizer_bytes: float, batch: int) -> int:
    """The micro-batch from two probes: the largest that fits this run's share of the device's free bytes, balanced."""
    return balanced(largest_fitting(probes, SAFETY * free / runs_per_device, optimizer_bytes), batch)
