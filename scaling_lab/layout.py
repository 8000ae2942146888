"""Where everything lives under a results directory. Every stage asks this module; nobody builds paths.

    <results_dir>/
      sweep.json                 the planned grid of the last sweep launch (run ids and their overrides)
      runs/<run_id>/record.json  one run record per run (schema: scaling_lab.records)
      runs/<run_id>/wandb/       the run's W&B files (offline runs sync from here)
      runs/<run_id>/last.ckpt    the latest training checkpoint, while the run is unfinished (resume point)
      runs/<run_id>/branch-<id>.ckpt  a WSD trunk's state where run <id> branches off, until that run is done
      runs/<run_id>/claim.lock   held (flock) by the process training the run; its owner is written inside
      runs/<run_id>/error.txt    the traceback of a failed or diverged run
      fit/fit.json               the fit stage's numbers
      fit/report.md              the fit stage's report, plots beside it in fit/plots/
      .hydra/                    Hydra's own logs of each launch
      .hydra/<time>/packed.jsonl hydra/launcher=packed's journal: a line per job (pid, GPUs, start, end, exit code)
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

RECORD_NAME = "record.json"
PACKED_JOURNAL = "packed.jsonl"


def check_writable(results_dir: str | Path) -> None:
    """One clear error, before any training, when runs could not be recorded under results_dir."""
    try:
        Path(results_dir).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=results_dir).close()
    except OSError as e:
        raise PermissionError(f"results_dir={results_dir} is not writable ({e.strerror or e})") from e


def runs_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "runs"


def run_dir(results_dir: str | Path, run_id: str) -> Path:
    return runs_dir(results_dir) / run_id


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return run_dir(results_dir, run_id) / RECORD_NAME


def checkpoint_path(results_dir: str | Path, run_id: str) -> Path:
    return run_dir(results_dir, run_id) / "last.ckpt"


def branch_checkpoint_path(results_dir: str | Path, trunk_id: str, branch_id: str) -> Path:
    return run_dir(results_dir, trunk_id) / f"branch-{branch_id}.ckpt"


def error_path(results_dir: str | Path, run_id: str) -> Path:
    return run_dir(results_dir, run_id) / "error.txt"


def claim_path(results_dir: str | Path, run_id: str) -> Path:
    return run_dir(results_dir, run_id) / "claim.lock"


def record_paths(results_dir: str | Path) -> Iterator[Path]:
    """Every run record under a results directory, in a stable order."""
    yield from sorted(runs_dir(results_dir).glob(f"*/{RECORD_NAME}"))


def packed_journal(launch_dir: str | Path) -> Path:
    """hydra/launcher=packed's journal of one launch, in its Hydra sweep dir (.hydra/<time>/, conf/main.yaml)."""
    return Path(launch_dir) / PACKED_JOURNAL


def packed_journals(results_dir: str | Path) -> list[Path]:
    """The packed journals of every launch into a results directory, oldest first."""
    return sorted(Path(results_dir).glob(f".hydra/*/{PACKED_JOURNAL}"))


def sweep_manifest(results_dir: str | Path) -> Path:
    return Path(results_dir) / "sweep.json"


def fit_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "fit"


def fit_numbers(fit_output_dir: str | Path) -> Path:
    """fit.json inside a fit's output directory (for a results directory: inside fit_dir)."""
    return Path(fit_output_dir) / "fit.json"


def fit_report(fit_output_dir: str | Path) -> Path:
    """report.md inside a fit's output directory."""
    return Path(fit_output_dir) / "report.md"


def fit_plots(fit_output_dir: str | Path) -> Path:
    """The directory of the report's figures (*.png), beside report.md."""
    return Path(fit_output_dir) / "plots"
