"""One table of runs from a results directory, a CSV or a W&B project: validated, de-duplicated, explained.

Everything the fit leaves out is listed (``excluded``: what and why) and everything it assumed is said
(``notes``); input it cannot use at all raises FitInputError with a one-line reason.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from scaling_lab import layout
from scaling_lab.accounting import compute_from_tokens, params_total, tokens_from_compute
from scaling_lab.records import RecordError, read_record

N_PARAMETERS = 5  # E, A, B, alpha, beta of the Approach 3 law


class FitInputError(ValueError):
    """Input the fit cannot use; the message names the problem in one line."""


@dataclass
class RunTable:
    run_ids: list[str]
    params: np.ndarray  # N
    tokens: np.ndarray  # D
    flops: np.ndarray  # C
    loss: np.ndarray  # L
    source: str
    notes: list[str] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.loss)


@dataclass
class _Row:
    run_id: str
    params: float | None
    tokens: float | None
    flops: float | None
    loss: float | None
    hparams: str = ""  # canonical JSON of the training hyperparameters, "" when unknown
    dataset: str | None = None
    tokenizer: str | None = None


def load_table(source: str | Path, cfg: dict[str, Any], wandb_api=None) -> RunTable:
    """The fit's table from ``source``: a results directory, a .csv file, or wandb:ENTITY/PROJECT[/GROUP]."""
    text = str(source)
    # Hydra turns +fit.where.model.name=X into {"model": {"name": X}}; the readers match dotted names
    cfg = {**cfg, "where": _flatten(cfg.get("where") or {})}
    notes: list[str] = []
    excluded: list[dict[str, str]] = []
    if text.startswith("wandb:"):
        rows = _wandb_rows(text, cfg, notes, excluded, wandb_api)
    elif Path(text).is_dir():
        rows = _record_rows(Path(text), cfg, notes, excluded)
    elif Path(text).is_file():
        rows = _csv_rows(Path(text), cfg, notes)
    else:
        raise FitInputError(f"input {text!r}: not a results directory, a CSV file or wandb:ENTITY/PROJECT[/GROUP]")
    return _finish(rows, text, cfg, notes, excluded)


def _record_rows(results_dir: Path, cfg, notes, excluded) -> list[_Row]:
    paths = list(layout.record_paths(results_dir))
    if not paths:
        raise FitInputError(f"input {results_dir}: no run records under {layout.runs_dir(results_dir)}")
    params_key = cfg.get("params_field", "params")
    convention = cfg.get("flops_convention")
    where = cfg["where"]
    rows, conventions, repeated, unseen = [], set(), [], set(where)
    for path in paths:
        try:
            record = read_record(path)
        except RecordError as e:
            excluded.append({"run": path.parent.name, "reason": f"unreadable record: {_one_line(e)}"})
            continue
        run_id = record["run_id"]
        unseen = {key for key in unseen if _field(record, key) is _ABSENT}
        if not _matches(record, where):
            continue
        if record["status"] != "completed":
            reason = f"status {record['status']}" + (f": {record['error']}" if record.get("error") else "")
            excluded.append({"run": run_id, "reason": reason})
            continue
        if convention:
            flops = (record.get("flops_by_convention") or {}).get(convention)
        else:
            flops = record["flops"]
            conventions.add(record["flops_convention"])
        data = record.get("data") or {}
        if data.get("repeated", (data.get("epochs") or 0) > 1):  # records before the flag: epochs alone
            repeated.append(data.get("epochs") or 0.0)
        rows.append(_Row(run_id, record.get(params_key), record["tokens"], flops, record["final_val_loss"],
                         _canonical(record.get("hparams")), _canonical(data.get("fingerprint")),
                         _canonical(data.get("tokenizer"))))
    if unseen:  # a misspelt field would otherwise only show up as "too few usable runs"
        raise FitInputError(f"input {results_dir}: fit.where names field {min(unseen)!r}, which no run record has")
    if len(conventions) > 1:
        raise FitInputError(f"input {results_dir}: runs count FLOPs under different conventions "
                            f"({', '.join(sorted(conventions))}); set fit.flops_convention to one of them")
    if convention:
        notes.append(f"compute C is the records' flops_by_convention[{convention!r}]")
    elif conventions:
        notes.append(f"compute C counted under the {conventions.pop()} convention (scaling_lab.accounting)")
    if params_key != "params":
        notes.append(f"model size N is the records' {params_key!r}")
    if repeated:
        notes.append(f"{len(repeated)} of {len(rows)} runs saw some of their training data more than once (up to "
                     f"{max(repeated):.2f} epochs; the records' data.repeated and data.epochs): the fit counts "
                     "repeated tokens like fresh ones")
    return rows


def _csv_rows(path: Path, cfg, notes) -> list[_Row]:
    columns = {"params": "params", "tokens": "tokens", "loss": "loss", "flops": "flops",
               "dataset": "dataset", "tokenizer": "tokenizer", **(cfg.get("columns") or {})}
    try:
        with open(path, newline="") as f:
            table = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FitInputError(f"input {path}: unreadable CSV ({_one_line(e)})") from e
    if not table:
        raise FitInputError(f"input {path}: no rows")
    header = set(table[0])
    for key in ("params", "loss"):
        if columns[key] not in header:
            raise FitInputError(f"input {path}: no column {columns[key]!r} for {key} (map it with fit.columns.{key})")
    has_tokens, has_flops = columns["tokens"] in header, columns["flops"] in header
    if not has_tokens and not has_flops:
        raise FitInputError(f"input {path}: neither a tokens column {columns['tokens']!r} nor a flops column "
                            f"{columns['flops']!r} (map one with fit.columns.tokens or fit.columns.flops)")
    where = cfg["where"]
    for key in where:
        if key not in header:
            raise FitInputError(f"input {path}: fit.where names column {key!r}, which the CSV does not have")
    rows = []
    for i, row in enumerate(table, start=2):  # line numbers as an editor shows them, after the header
        if not all(str(row[k]) == str(v) for k, v in where.items()):
            continue
        rows.append(_Row(f"line {i}", _number(row[columns["params"]]),
                         _number(row[columns["tokens"]]) if has_tokens else None,
                         _number(row[columns["flops"]]) if has_flops else None, _number(row[columns["loss"]]),
                         dataset=row.get(columns["dataset"]), tokenizer=row.get(columns["tokenizer"])))
    if where:
        notes.append("rows where " + ", ".join(f"{k} = {v}" for k, v in where.items()))
    renamed = {k: v for k, v in columns.items() if k != v and v in header}
    if renamed:
        notes.append("columns " + ", ".join(f"{k} <- {v!r}" for k, v in renamed.items()))
    return rows


def _wandb_rows(spec: str, cfg, notes, excluded, api) -> list[_Row]:
    parts = spec[len("wandb:"):].strip("/").split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise FitInputError(f"input {spec!r}: expected wandb:ENTITY/PROJECT or wandb:ENTITY/PROJECT/GROUP")
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": parts[2]} if len(parts) == 3 else None
    try:
        runs = list(api.runs(f"{parts[0]}/{parts[1]}", filters=filters))
    except Exception as e:  # noqa: BLE001 - network, auth and not-found all mean the same to the user
        raise FitInputError(f"input {spec!r}: W&B could not list the runs ({_one_line(e)})") from e
    columns, where = cfg.get("columns") or {}, cfg["where"]
    rows, unseen = [], set(where)
    for run in runs:
        if getattr(run, "job_type", None) == "fit":
            continue
        summary, config = dict(run.summary), _flatten(dict(run.config))
        fields = {**summary, **config}  # fit.where names a config field (model.name) or a summary metric
        unseen -= set(fields)
        if not all(k in fields and str(fields[k]) == str(v) for k, v in where.items()):
            continue
        if run.state != "finished":
            excluded.append({"run": run.name, "reason": f"W&B state {run.state}"})
            continue

        def pick(key, *fallbacks):
            for name in (columns.get(key, key), *fallbacks):
                for where in (summary, config):
                    if where.get(name) is not None:
                        return _number(where[name])
            return None

        params = pick("params")
        if params is None and "model.n_layer" in config:
            params = _params_from_shape(config)
        rows.append(_Row(run.name, params, pick("tokens"), pick("flops"), pick("loss", "val/loss", "final_val_loss"),
                         _canonical({k: v for k, v in config.items() if k.startswith("train.")}),
                         _canonical(config.get("data.fingerprint")), _canonical(config.get("data.tokenizer"))))
    if unseen:
        raise FitInputError(f"input {spec!r}: fit.where names field {min(unseen)!r}, which no W&B run has")
    if not rows:
        raise FitInputError(f"input {spec!r}: no finished training runs")
    notes.append(f"runs read from W&B {'/'.join(parts)}")
    if where:
        notes.append("runs where " + ", ".join(f"{k} = {v}" for k, v in where.items()))
    return rows


def _finish(rows: list[_Row], source: str, cfg, notes, excluded) -> RunTable:
    for name, values in (("datasets", {r.dataset for r in rows}), ("tokenizers", {r.tokenizer for r in rows})):
        values.discard(None)
        if len(values) > 1:
            shown = ", ".join(sorted(v[:40] for v in values)[:4])
            raise FitInputError(f"input {source}: runs from {len(values)} different {name} ({shown}); "
                                "fit one at a time (select with fit.where)")
    usable = []
    for row in rows:
        if row.tokens is None and row.flops is not None and row.params is not None and row.params > 0:
            row.tokens = tokens_from_compute(row.flops, row.params)
            _note_once(notes, "tokens D = C / (6 N): the input has compute but no token counts")
        if row.flops is None and row.tokens is not None and row.params is not None:
            row.flops = compute_from_tokens(row.params, row.tokens)
            _note_once(notes, "compute C = 6 N D (Hoffmann et al. 2022): the input has token counts but no compute")
        problem = _invalid(row)
        if problem:
            excluded.append({"run": row.run_id, "reason": problem})
        else:
            usable.append(row)
    usable = _dedupe(usable, notes, excluded)
    k = int(cfg.get("exclude_top_loss") or 0)
    if k:
        # checked before slicing: with k >= len(usable) the slices below start from the wrong end
        if len(usable) - k < N_PARAMETERS:
            raise FitInputError(f"fit.exclude_top_loss={k} leaves {max(len(usable) - k, 0)} of the {len(usable)} "
                                f"usable runs of {source}, fewer than the {N_PARAMETERS} parameters of the law")
        usable.sort(key=lambda r: r.loss)
        usable, dropped = usable[:len(usable) - k], usable[len(usable) - k:]
        for row in dropped:
            excluded.append({"run": row.run_id, "reason": f"among the {k} highest losses (fit.exclude_top_loss={k})"})
    if len(usable) < N_PARAMETERS:
        raise FitInputError(f"input {source}: {len(usable)} usable runs, fewer than the {N_PARAMETERS} parameters "
                            "of L = E + A/N^alpha + B/D^beta")
    if len({r.params for r in usable}) < 2:
        raise FitInputError(f"input {source}: every usable run has the same model size; a scaling law needs several")
    if len({r.tokens for r in usable}) < 2:
        raise FitInputError(f"input {source}: every usable run has the same token count; a scaling law needs several")
    return RunTable([r.run_id for r in usable], *(np.array([getattr(r, k) for r in usable], dtype=float)
                                                  for k in ("params", "tokens", "flops", "loss")),
                    source=source, notes=notes, excluded=excluded)


def _invalid(row: _Row) -> str | None:
    for name in ("loss", "params", "tokens", "flops"):
        value = getattr(row, name)
        if value is None:
            return f"{name} missing"
        if not math.isfinite(value):
            return f"{name} is {value}"
        if value <= 0:
            return f"{name} is {value:g}, not positive"
    return None


def _dedupe(rows: list[_Row], notes, excluded) -> list[_Row]:
    """Repeated rows go; several runs at one (N, D) keep the lowest loss (the best hyperparameters)."""
    seen: dict[tuple, _Row] = {}
    best: dict[tuple[float, float], _Row] = {}
    shared = 0
    for row in rows:
        key = (row.params, row.tokens, row.loss, row.hparams)
        if key in seen:
            excluded.append({"run": row.run_id, "reason": f"duplicate of {seen[key].run_id}"})
            continue
        seen[key] = row
        cell = (row.params, row.tokens)
        if cell in best:
            shared += 1
            worse, better = sorted((row, best[cell]), key=lambda r: r.loss, reverse=True)
            excluded.append({"run": worse.run_id, "reason": f"same (N, D) as {better.run_id}, higher loss; "
                                                            "the best run of each (N, D) is used"})
            best[cell] = better
        else:
            best[cell] = row
    if shared:
        notes.append(f"{shared} runs share (N, D) with another run (other hyperparameters or seeds): "
                     "the lowest loss of each (N, D) is used")
    kept = {id(r) for r in best.values()}
    return [r for r in rows if id(r) in kept]


_ABSENT = object()  # a field the record does not have, unlike one it has as null


def _field(record: dict, dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


def _matches(record: dict, where: dict) -> bool:
    for dotted, wanted in where.items():
        value = _field(record, dotted)
        if value is _ABSENT or str(value) != str(wanted):
            return False
    return True


def _params_from_shape(config: dict) -> float | None:
    """N from the shape a W&B run logged (ModelConfig.to_dict() under model.*); None when a number the count
    reads is missing or not a positive integer, as ModelConfig would refuse it (the fit never imports it)."""
    shape = {}
    for key in ("n_layer", "d_model", "vocab_size", "block_size", "mlp_ratio"):
        value = _number(config.get(f"model.{key}"))
        if value is None or not value.is_integer() or value <= 0:  # NaN is not an integer
            return None
        shape[key] = int(value)
    return float(params_total(SimpleNamespace(**shape)))


def _flatten(d: dict, prefix: str = "") -> dict:
    """W&B configs nest; some exports wrap each value as {"value": v, "desc": ...}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and "value" in v and set(v) <= {"value", "desc"}:
            v = v["value"]
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _canonical(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _note_once(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
