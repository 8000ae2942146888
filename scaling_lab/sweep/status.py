"""`scaling-lab status`: which runs of a sweep are completed, running, failed, diverged or still pending."""

from __future__ import annotations

import json
from collections import Counter

from scaling_lab import claim, layout, records

ORDER = (*records.STATUSES, "pending")


def run_states(results_dir: str) -> list[dict]:
    """One row per run: planned runs from sweep.json (pending until a record appears) and every record found."""
    found: dict[str, dict] = {}
    for path in layout.record_paths(results_dir):
        try:
            rec = records.read_record(path)
        except records.RecordError as e:
            found[path.parent.name] = {"run_id": path.parent.name, "status": "failed", "reason": str(e)}
            continue
        found[rec["run_id"]] = {"run_id": rec["run_id"], "status": rec["status"], "reason": rec.get("error"),
                                "val_loss": rec.get("final_val_loss")}
    manifest = layout.sweep_manifest(results_dir)
    try:
        planned = json.loads(manifest.read_text())["runs"] if manifest.exists() else []
    except (ValueError, KeyError, TypeError) as e:  # written atomically, so only a hand edit gets here
        raise records.RecordError(f"{manifest} is not a sweep manifest ({type(e).__name__}: {e})") from e
    rows = [found.pop(p["run_id"], {"run_id": p["run_id"], "status": "pending"}) for p in planned]
    return [_live(results_dir, row) for row in rows + list(found.values())]


def _live(results_dir: str, row: dict) -> dict:
    """`running` only while a live process holds the run's claim; a run whose process died is pending again."""
    if row["status"] not in ("running", "pending"):
        return row
    holder = claim.live_holder(layout.claim_path(results_dir, row["run_id"]))
    if holder is not None:
        return {**row, "status": "running", "reason": claim.describe(holder)}
    if row["status"] == "running":
        resume = "its checkpoint" if layout.checkpoint_path(results_dir, row["run_id"]).exists() else "scratch"
        return {**row, "status": "pending", "reason": f"interrupted (no live process); the next launch resumes "
                                                      f"from {resume}"}
    return row


def summarize(results_dir: str) -> dict[str, int]:
    return _count(run_states(results_dir))


def _count(rows: list[dict]) -> dict[str, int]:
    counts = Counter(row["status"] for row in rows)
    return {status: counts.get(status, 0) for status in ORDER}


def render(results_dir: str) -> str:
    rows = run_states(results_dir)
    if not rows:
        return f"no runs under {results_dir}"
    width = max(len(r["run_id"]) for r in rows)
    lines = [f"{'run':<{width}}  {'status':<9}  detail"]
    for r in rows:
        detail = f"val loss {r['val_loss']:.4f}" if r.get("val_loss") is not None else (r.get("reason") or "")
        lines.append(f"{r['run_id']:<{width}}  {r['status']:<9}  {detail}")
    # counted from the rows shown, not a second read that a live sweep could have moved on from
    lines.append(", ".join(f"{n} {s}" for s, n in _count(rows).items()))
    return "\n".join(lines)
