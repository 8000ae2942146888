"""The run record: the one contract between training and fitting.

Every training run leaves ``<results_dir>/runs/<run_id>/record.json`` (see ``scaling_lab.layout``). The fit
stage reads only these files (or a CSV / W&B export with the same columns); it never imports training code.
``FIELDS`` below is the schema: name, JSON type, whether a completed record must have it, and what it means.
The README's "Run record" table is generated from it (``scaling-lab schema``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from scaling_lab import atomic
from scaling_lab.provenance import PACKAGES

SCHEMA_VERSION = 1
STATUSES = ("completed", "running", "failed", "diverged")  # in the order `status` lists them

# (name, JSON type, required when status == "completed", meaning)
FIELDS: list[tuple[str, str, bool, str]] = [
    ("schema_version", "integer", True, "version of this schema"),
    ("run_id", "string", True, "deterministic id: a hash of the run's semantic config (model, data, train, seed)"),
    ("status", "string", True, "one of running / completed / failed / diverged"),
    ("sweep", "string", False, "sweep name (the W&B group); null for a lone `scaling-lab train`"),
    ("model", "object", True, "resolved shape: name, n_layer, d_model, n_head, block_size, vocab_size"),
    ("params", "integer", True, "N: all parameters of the instantiated model (tied embedding counted once)"),
    ("params_non_embedding", "integer", True, "Kaplan et al. 2020 N: params minus token and position embeddings"),
    ("tokens", "integer", True, "D: training tokens actually consumed (requested budget rounded to whole sequences)"),
    ("tokens_requested", "integer", True, "the configured data budget `train.tokens`"),
    ("flops", "number", True, "C: training compute under `flops_convention`"),
    ("flops_convention", "string", True, "how `flops` was counted (see scaling_lab.accounting.CONVENTIONS)"),
    ("flops_by_convention", "object", True, "training compute under every convention in scaling_lab.accounting"),
    ("final_val_loss", "number", True, "mean validation cross-entropy (nats/token) after the last step"),
    ("final_train_loss", "number", False, "training loss of the last batch (one batch: noisier than final_val_loss)"),
    ("val_curve", "array", True, "[[tokens, val_loss], ...] at every evaluation, the last at the end of training"),
    ("hparams", "object", True, "every training hyperparameter as used (lr, batch, warmup, schedule, ...)"),
    ("hparams_source", "object", True, "for lr and batch size: 'config' or the published rule that set them"),
    ("data", "object", True, "corpus fingerprint, source, tokenizer, vocab_size, unique train/val tokens, epochs, "
                             "repeated (some training data seen more than once)"),
    ("seed", "integer", True, "global seed (model init and data order)"),
    ("wall_time_s", "number", True, "seconds from start of training to the record being written"),
    ("throughput", "object", False, "tokens_per_s and flops_per_s over this process's training (start-up and "
                                    "compilation included); steady_tokens_per_s after its first steps, validation "
                                    "passes and checkpoint writes excluded (scaling_lab/train/throughput.py; null "
                                    "for a run of a few steps)"),
    ("hardware", "object", True, "accelerator, device name, CPU count, platform"),
    ("versions", "object", True, f"versions of python and of {', '.join(PACKAGES)} (null: not installed)"),
    ("git_commit", "string", False, "commit of the scaling-lab checkout, -dirty if its tracked files had changes "
                                    "(null: not a git checkout)"),
    ("branch", "object", False, "WSD branch (sweep.branch): trunk_run_id, branched_at_tokens (where it left the trunk's "
                                "snapshot), tokens_trained (by this run: tokens - branched_at_tokens); null otherwise"),
    ("wandb", "object", False, "W&B project, group, run id, mode and local directory"),
    ("error", "string", False, "for failed / diverged runs: the one-line reason"),
    ("started_at", "string", True, "UTC ISO-8601 start time"),
    ("finished_at", "string", False, "UTC ISO-8601 end time"),
]
REQUIRED_COMPLETED = [name for name, _, required, _ in FIELDS if required]
_JSON_TYPES = {"integer": int, "number": (int, float), "string": str, "object": dict, "array": list}


class RecordError(ValueError):
    """A record file that is missing, unreadable or does not follow the schema."""


def make_run_id(semantic: dict[str, Any], label: str = "") -> str:
    """Deterministic id from the run's semantic config: same model, data, training and seed, same id."""
    digest = hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{label}-{digest}" if label else digest


def validate(record: dict[str, Any]) -> None:
    """Raise RecordError naming the first field that breaks the schema."""
    status = record.get("status")
    if status not in STATUSES:
        raise RecordError(f"record {record.get('run_id')!r}: status {status!r} is not one of {STATUSES}")
    types = {name: kind for name, kind, _, _ in FIELDS}
    for name in REQUIRED_COMPLETED if status == "completed" else ["schema_version", "run_id", "status"]:
        if record.get(name) is None:
            raise RecordError(f"record {record.get('run_id')!r}: required field {name!r} is missing")
    for name, value in record.items():
        kind = types.get(name)
        if kind and value is not None and not isinstance(value, _JSON_TYPES[kind]):
            raise RecordError(f"record {record.get('run_id')!r}: field {name!r} should be a JSON {kind}")


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    atomic.write_bytes(path, json.dumps(payload, indent=2, sort_keys=False, default=_jsonable).encode())


def write_record(path: Path, record: dict[str, Any]) -> None:
    record = {"schema_version": SCHEMA_VERSION, **record}
    validate(record)
    write_atomic(path, record)


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: unreadable run record ({e})") from e
    if not isinstance(record, dict):
        raise RecordError(f"{path}: a run record must be a JSON object")
    validate(record)
    return record


def schema_markdown() -> str:
    rows = ["| field | type | required | meaning |", "|---|---|---|---|"]
    rows += [f"| `{n}` | {t} | {'yes' if r else ''} | {m} |" for n, t, r, m in FIELDS]
    return "\n".join(rows)


def _jsonable(value: Any) -> Any:
    # numpy scalars and Paths reach records through configs and metrics; anything else is a bug to surface
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
