"""`sweep.branch=true`: the data-budget axis of a grid as one WSD trunk per group plus short cooldowns.

Runs that differ only in train.tokens form a group. The multirun gets one job per group: its longest run (the trunk)
with `sweep.branch_tokens` listing the others. The job trains the trunk, which leaves a snapshot at each shorter
run's cooldown start, then each shorter run from its snapshot (scaling_lab/train/branching.py), every run under its
own claim and with its own record and run id, exactly those of training it alone. The manifest still lists every
run; a re-launch skips finished runs and resumes the rest. Cost: the trunk plus each branch's cooldown, e.g. budgets
1, 2, 4, 8 with a 20% cooldown train 8 + 0.2 (1 + 2 + 4) = 9.4 of the 15 units that independent runs would.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Iterable

from hydra import compose
from omegaconf import DictConfig, open_dict

from scaling_lab.claim import Busy
from scaling_lab.sweep.grid import override_key
from scaling_lab.train.run import FINISHED, ConfigError, RunSpec, existing_record, train
from scaling_lab.train.schedule import cooldown_start

log = logging.getLogger(__name__)
TOKENS = "train.tokens"


def _tokens(entry: dict) -> str:
    """The train.tokens value as the job's override wrote it: the same string gives the same value and run id."""
    values = [o.split("=", 1)[1] for o in entry["overrides"] if override_key(o) == TOKENS]
    return values[-1] if values else str(entry["tokens"])


def groups(entries: Iterable[dict]) -> list[list[dict]]:
    """Manifest entries grouped by everything but train.tokens, each group longest run first."""
    by_rest = defaultdict(list)
    for entry in entries:
        by_rest[tuple(o for o in entry["overrides"] if override_key(o) != TOKENS)].append(entry)
    return [sorted(group, key=lambda e: -e["tokens"]) for group in by_rest.values()]


def multirun(config_name: str, user_overrides: list[str], entries: list[dict]) -> list[str]:
    """The multirun command line of one job per group: the trunk's tokens plus the branches' (checked first)."""
    budgets = {tuple(_tokens(e) for e in group) for group in groups(entries)}
    if len(budgets) != 1:  # a Cartesian grid gives every group the same budgets; a design does not
        raise ConfigError("sweep.branch needs the same train.tokens values for every combination of the other "
                          "sweep keys (a grid preset, not a sweep.design)")
    trunk, *rest = budgets.pop()
    for group in groups(entries):
        check(RunSpec.from_config(compose(config_name, overrides=group[0]["overrides"])).train)
    return [*user_overrides, f"{TOKENS}={trunk}", f"++sweep.branch_tokens=[{','.join(rest)}]"]


def check(train: dict) -> None:
    """One line naming the key when a branch would not be exactly the run it stands for."""
    if train["schedule"] != "wsd":
        raise ConfigError("sweep.branch needs train.schedule=wsd (a cosine schedule depends on the run's length "
                          "from the first step)")
    for key in ("lr", "batch_size"):
        if train[key] is None:
            raise ConfigError(f"sweep.branch needs a fixed train.{key}: the published rule sets it from each run's "
                              "own compute, so branches of one trunk would need different values")
    if train["warmup_tokens"] is None:
        raise ConfigError("sweep.branch needs train.warmup_tokens: warmup_frac makes the warmup depend on each "
                          "run's length")


def train_group(cfg: DictConfig) -> None:
    """One job of a branched sweep: the trunk, then each branch from its snapshot. A failed run is logged (its
    record says why) and the group goes on; a trunk that another launch is training skips the whole group."""
    trunk = RunSpec.from_config(cfg)
    branches = []
    for tokens in cfg.sweep.branch_tokens:
        branch_cfg = copy.deepcopy(cfg)
        with open_dict(branch_cfg):
            branch_cfg.train.tokens = tokens
        branches.append(RunSpec.from_config(branch_cfg))
    pending = [b for b in branches if (existing_record(b) or {}).get("status") not in FINISHED]
    _guarded(lambda: train(trunk, branches=pending), trunk, skip_group=True)
    for branch in sorted(branches, key=lambda b: b.train["tokens"]):
        _guarded(lambda: train(branch, trunk_id=trunk.run_id), branch, skip_group=False)


def _guarded(work, spec: RunSpec, skip_group: bool) -> None:
    try:
        work()
    except Busy as e:  # a racing launch is training it and will write its record (and, for a trunk, its branches)
        if skip_group:
            raise
        log.warning("%s; this launch skips it", e)
    except Exception as e:  # noqa: BLE001 - one broken run must not stop the others
        log.error("run %s failed, sweep continues: %s: %s", spec.run_id, type(e).__name__, e)


def jobs(entries: list[dict], rows: list, cooldown_frac: float) -> list[dict[str, int]]:
    """Per job of a branched sweep, in launch order, the tokens each of its runs trains, from the planner's rows: the
    trunk in full, every other run from its cooldown start on (where scaling_lab/train/branching.py puts its
    snapshot)."""
    row_of = {r.run_id: r for r in rows}
    out = []
    for trunk, *rest in groups(entries):
        job = {trunk["run_id"]: row_of[trunk["run_id"]].tokens}
        for entry in rest:
            r = row_of[entry["run_id"]]
            job[r.run_id] = r.tokens - cooldown_start(r.steps, cooldown_frac) * r.batch_size * r.shape.block_size
        out.append(job)
    return out
