"""One training run, from a composed Hydra config to a run record on disk.

Order matters: everything that can be checked cheaply is checked before the corpus is built or a model trained,
and a finished record (completed or diverged) is never overwritten: a re-launch of the same config returns it.
A run is trained under its claim (scaling_lab/claim.py), so two launches never train it at the same time.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from scaling_lab import accounting, checks, claim, layout, provenance, records, tracking
from scaling_lab.data.config import DataConfig
from scaling_lab.model.config import ModelConfig
from scaling_lab.train import hparams
from scaling_lab.train.schedule import SCHEDULES, cooldown_steps_for, warmup_steps_of

log = logging.getLogger(__name__)

# train.* keys that change how a run is watched, not what it learns: left out of the run id
_UNSEMANTIC_TRAIN_KEYS = ("eval_points", "log_every", "checkpoint_every", "keep_checkpoint",
                          # speed knobs: the same optimizer steps, computed differently
                          "compile", "compile_mode", "micro_batch_size", "loss_chunk_rows")
# train.* keys that leave the math unchanged at these values: left out of the id, so runs keep their earlier ids
_ID_DEFAULTS = {"schedule": "cosine", "warmup_tokens": None}
# keys that only one schedule reads
_SCHEDULE_KEYS = {"min_lr_frac": "cosine", "cooldown_frac": "wsd"}
# the range of each numeric train.* knob (conf/train/default.yaml says what each means)
_TRAIN_INTERVALS = {"lr": "(0, inf)", "warmup_frac": "[0, 1)", "warmup_tokens": "(0, inf)", "min_lr_frac": "(0, 1]",
                    "cooldown_frac": "(0, 1)", "weight_decay": "[0, inf)", "beta1": "[0, 1)", "beta2": "[0, 1)",
                    "eps": "(0, inf)", "grad_clip": "[0, inf)", "divergence_factor": "(0, inf)"}
_NULLABLE = ("lr", "warmup_tokens", "grad_clip")  # null = the published rule / warmup_frac / no clipping
# the values of the choice knobs (precision and compile_mode: Lightning's and torch.compile's names)
ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# a diverged run would diverge again (training is deterministic): like a completed one, it is a result
FINISHED = ("completed", "diverged")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


# the shared numeric checks (scaling_lab/checks.py), failing as this stage's ConfigError
check_count = partial(checks.count, error=ConfigError)
check_interval = partial(checks.number, error=ConfigError)


class Diverged(RuntimeError):
    """Training loss became NaN/inf or exploded; the run ends with status `diverged`."""


@dataclass(frozen=True)
class RunSpec:
    """What a config asks for, checked, plus the run's id and directory."""

    run_id: str
    run_dir: Path
    results_dir: Path
    sweep: str | None
    model: dict
    data: dict
    train: dict
    logger: dict
    trainer: dict
    seed: int
    accelerator: str
    progress: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSpec:
        container = OmegaConf.to_container(cfg, resolve=True)
        model, data, train = container["model"], container["data"], container["train"]
        _check(model, train, container["trainer"])
        _canonical(train)
        tracking.mode(container["logger"]["mode"])
        if container["accelerator"] not in ACCELERATORS:
            raise ConfigError(f"accelerator={container['accelerator']!r} is not one of {ACCELERATORS}")
        DataConfig.from_dict(data)  # an unknown source or tokenizer fails here, before any corpus is read
        check_count("data.val_tokens", data["val_tokens"], low=model["block_size"])  # at least one sequence
        shape_keys = ("name",) if model["name"] else ("n_layer", "d_model", "n_head")
        if model.get("parametrization", "standard") != "standard":  # standard runs keep their earlier ids
            shape_keys += ("parametrization", "mup_base_width")
        semantic = {
            "model": {k: model[k] for k in (*shape_keys, "block_size")},
            "data": {k: v for k, v in data.items() if k != "cache_dir"},
            "train": _semantic_train(train),
            "seed": container["seed"],
        }
        run_id = records.make_run_id(semantic, label=_label(model, train["tokens"]))
        results_dir = Path(container["results_dir"])
        sweep = (container.get("sweep") or {}).get("name")
        return cls(run_id=run_id, run_dir=layout.run_dir(results_dir, run_id), results_dir=results_dir,
                   sweep=sweep, model=model, data=data, train=train, logger=container["logger"],
                   trainer=container["trainer"],
                   seed=int(container["seed"]), accelerator=container["accelerator"],
                   progress=bool(container["progress"]))


def schedule_steps(spec: RunSpec, vocab_size: int) -> tuple[ModelConfig, dict, dict]:
    """(shape, resolved hyperparameters, where lr and batch size came from) of a run on a corpus of this vocabulary:
    lr, batch_size, total_steps, warmup_steps and, under wsd, cooldown_steps. The launch checks every run with it
    before anything trains; training uses the same numbers.

    Raises ConfigError when the warmup would not end before the decay (wsd: before the cooldown; cosine: within
    the run), which only a length in tokens (train.warmup_tokens) or warmup_frac + cooldown_frac near 1 can cause.
    """
    t = spec.train
    shape = ModelConfig.from_config(spec.model, vocab_size=vocab_size)
    lr, batch_size, source = hparams.resolve(shape, int(t["tokens"]), t["lr"], t["batch_size"], t["lr_rule"])
    total = math.ceil(accounting.train_sequences(t["tokens"], shape.block_size) / batch_size)
    hp = {**t, "lr": lr, "batch_size": batch_size, "total_steps": total,
          "warmup_steps": warmup_steps_of(t, total, batch_size * shape.block_size)}
    decay_from = total
    if t["schedule"] == "wsd":
        hp["cooldown_steps"] = cooldown_steps_for(total, t["cooldown_frac"])
        decay_from = total - hp["cooldown_steps"]
    if hp["warmup_steps"] > decay_from:
        raise ConfigError(f"run {spec.run_id}: train.warmup_tokens / warmup_frac give {hp['warmup_steps']} warmup "
                          f"steps, past the {'cooldown' if t['schedule'] == 'wsd' else 'end'} of its {total} steps "
                          f"(train.tokens={t['tokens']}, batch {batch_size})")
    return shape, hp, source


def _canonical(train: dict) -> None:
    """One type per numeric knob, so that a number's spelling never changes the run id: train.tokens=1e6 (a float
    to Hydra) is the integer 1000000, and lr=1 is 1.0 like every other rate in conf/train/default.yaml."""
    if isinstance(train["tokens"], float) and train["tokens"].is_integer():
        train["tokens"] = int(train["tokens"])
    for key in _TRAIN_INTERVALS:
        if isinstance(train[key], int):  # bools were refused by _check
            train[key] = float(train[key])


def _semantic_train(train: dict) -> dict:
    return {k: v for k, v in train.items() if k not in _UNSEMANTIC_TRAIN_KEYS
            and not (k in _ID_DEFAULTS and v == _ID_DEFAULTS[k])
            and _SCHEDULE_KEYS.get(k, train["schedule"]) == train["schedule"]}


def _check(model: dict, train: dict, trainer: dict) -> None:
    ModelConfig.from_config(model, vocab_size=256)
    tokens = train["tokens"]
    check_interval("train.tokens", tokens, "(0, inf)")
    if tokens < model["block_size"]:
        raise ConfigError(f"train.tokens={tokens} is less than one sequence (model.block_size={model['block_size']})")
    if train["batch_size"] is not None:
        check_count("train.batch_size", train["batch_size"])
    for key, interval in _TRAIN_INTERVALS.items():
        check_interval(f"train.{key}", train[key], interval, besides=(None,) if key in _NULLABLE else ())
    if train["schedule"] not in SCHEDULES:
        raise ConfigError(f"train.schedule must be one of {SCHEDULES}, got {train['schedule']!r}")
    if train["lr_rule"] not in hparams.RULES:
        raise ConfigError(f"train.lr_rule must be one of {hparams.RULES}, got {train['lr_rule']!r}")
    if train["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision={train['precision']!r} is not one of {PRECISIONS}")
    if train["precision"].startswith("16-") and train["loss_chunk_rows"] is not None:
        # the fused loss forms its gradient inside the forward pass, before fp16's loss scaling: it would underflow
        raise ConfigError(f"train.precision={train['precision']} needs train.loss_chunk_rows=null (the fused loss's "
                          "gradients underflow in fp16 before loss scaling); bf16-mixed works with both")
    step_tokens = (train["batch_size"] or 1) * model["block_size"]
    if tokens < step_tokens:
        raise ConfigError(f"train.tokens={tokens} is less than one optimizer step (train.batch_size x "
                          f"model.block_size = {step_tokens} tokens)")
    _check_speed_knobs(train)
    check_count("train.eval_points", train["eval_points"])
    check_count("train.log_every", train["log_every"])
    check_count("train.checkpoint_every", train["checkpoint_every"], low=0)
    check_count("trainer.devices", trainer["devices"])
    check_count("trainer.runs_per_device", trainer.get("runs_per_device", 1))


def _check_speed_knobs(train: dict) -> None:
    if train["compile"] not in ("auto", True, False):
        raise ConfigError(f"train.compile must be auto, true or false, got {train['compile']!r}")
    if train["compile_mode"] not in COMPILE_MODES:
        raise ConfigError(f"train.compile_mode={train['compile_mode']!r} is not one of {COMPILE_MODES}")
    check_count("train.micro_batch_size", train["micro_batch_size"], besides=("auto", None))
    check_count("train.loss_chunk_rows", train["loss_chunk_rows"], besides=(None,))


def _label(model: dict, tokens: float) -> str:
    shape = model["name"] or f"L{model['n_layer']}-D{model['d_model']}-H{model['n_head']}"
    return f"{shape}_{_si(tokens)}"


def _si(count: float) -> str:
    """250000 -> 250k, 16384 -> 16.4k, 1e6 -> 1M: a readable run-id label (the hash keeps ids exact)."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{int(count)}"


def existing_record(spec: RunSpec) -> dict | None:
    path = layout.record_path(spec.results_dir, spec.run_id)
    if not path.exists():
        return None
    try:
        return records.read_record(path)
    except records.RecordError as e:
        log.warning("ignoring unreadable record, the run will be redone: %s", e)
        return None


def train(spec: RunSpec, branches: list[RunSpec] = (), trunk_id: str | None = None) -> dict:
    """Train one run (resuming its checkpoint) and write its record; return the record.

    A finished run is not trained again; a run that another live process is training raises claim.Busy.
    A WSD trunk saves snapshots for its `branches`; a branch of `trunk_id` starts from its snapshot, which is
    deleted once the branch is finished (scaling_lab/train/branching.py).
    """
    finished = _finished_record(spec)
    if not finished:
        from scaling_lab.train import device

        device.accelerator(spec.accelerator)  # a missing GPU fails here, before a record or a W&B run exists
        with claim.hold(layout.claim_path(spec.results_dir, spec.run_id)):
            # checked again under the claim: a racing launch may have finished the run a moment ago
            finished = _finished_record(spec) or _train_claimed(spec, branches, trunk_id)
    if trunk_id:
        from scaling_lab.train import checkpoint

        checkpoint.remove(layout.branch_checkpoint_path(spec.results_dir, trunk_id, spec.run_id))
    return finished


def _finished_record(spec: RunSpec) -> dict | None:
    previous = existing_record(spec)
    if not previous or previous["status"] not in FINISHED:
        return None
    detail = f"val loss {previous['final_val_loss']:.4f}" if previous["status"] == "completed" else previous["error"]
    log.info("run %s already %s (%s): skipped", spec.run_id, previous["status"], detail)
    return previous


def _train_claimed(spec: RunSpec, branches: list[RunSpec], trunk_id: str | None) -> dict:
    from scaling_lab.train import checkpoint  # torch/lightning are imported only for real work
    from scaling_lab.train.trainer import fit_one

    record_path = layout.record_path(spec.results_dir, spec.run_id)
    started = provenance.utc_now()
    base = {"run_id": spec.run_id, "sweep": spec.sweep, "seed": spec.seed, "started_at": started,
            "tokens_requested": int(spec.train["tokens"]), "versions": provenance.versions(),
            "git_commit": provenance.git_commit()}
    records.write_record(record_path, {**base, "status": "running"})
    t0 = time.perf_counter()
    try:
        outcome = fit_one(spec, branches, trunk_id)
    except Exception as e:  # noqa: BLE001 - every failure becomes a record, then propagates
        status = "diverged" if isinstance(e, Diverged) else "failed"
        layout.error_path(spec.results_dir, spec.run_id).write_text(traceback.format_exc())
        records.write_record(record_path, {**base, "status": status, "error": f"{type(e).__name__}: {e}",
                                           "finished_at": provenance.utc_now(),
                                           "wall_time_s": time.perf_counter() - t0})
        if status == "diverged":  # final: nothing will resume it
            checkpoint.remove(layout.checkpoint_path(spec.results_dir, spec.run_id))
        raise
    shape: ModelConfig = outcome.pop("shape")
    tokens = outcome["tokens"]
    record = {
        **base,
        "status": "completed",
        "model": shape.to_dict(),
        "params": accounting.params_total(shape),
        "params_non_embedding": accounting.params_non_embedding(shape),
        "flops": accounting.train_flops(shape, tokens),
        "flops_convention": accounting.DEFAULT_CONVENTION,
        "flops_by_convention": accounting.flops_by_convention(shape, tokens),
        "hardware": provenance.hardware(outcome["hparams"]["accelerator"]),
        "wall_time_s": time.perf_counter() - t0,
        "finished_at": provenance.utc_now(),
        **outcome,
    }
    records.write_record(record_path, record)
    # only now: a kill between dropping the checkpoint and writing the record would cost the whole run
    if not spec.train["keep_checkpoint"]:
        checkpoint.remove(layout.checkpoint_path(spec.results_dir, spec.run_id))
    log.info("run %s: N=%d D=%d val loss %.4f (%.1fs)", spec.run_id, record["params"], tokens,
             record["final_val_loss"], record["wall_time_s"])
    return record
