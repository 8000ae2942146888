"""Wires a RunSpec into Lightning: corpus, data module, model, W&B logger, Trainer; returns what the record needs.

Requeueing belongs to the launcher (submitit, `hydra/launcher=submitit_slurm`): every Trainer gets an explicit
LightningEnvironment, so Lightning's SLURM plugin never installs its own auto-requeue handler beside submitit's.
A requeued or re-launched run resumes from the checkpoint in its run directory (scaling_lab/train/checkpoint.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies import DDPStrategy

from scaling_lab import accounting, layout, tracking
from scaling_lab.data import TokenDataModule, prepare_corpus
from scaling_lab.train import branching, checkpoint, device, ranks
from scaling_lab.train.module import GPTModule
from scaling_lab.train.run import RunSpec, schedule_steps
from scaling_lab.train.throughput import SteadyRate

log = logging.getLogger(__name__)


def fit_one(spec: RunSpec, branches: list[RunSpec] = (), trunk_id: str | None = None) -> dict:
    """Train a run from its last checkpoint (or from scratch) on trainer.devices ranks; rank zero's outcome.

    A WSD trunk also leaves a snapshot for each of `branches` (scaling_lab/train/branching.py); a branch (`trunk_id`
    given) without a checkpoint of its own starts from its trunk's snapshot, or from scratch if there is none.
    fit_rank's `trunk_id` is set only when `resume` is that snapshot.
    """
    resume = checkpoint.resume_point(layout.checkpoint_path(spec.results_dir, spec.run_id))
    from_trunk = None  # set only when this process starts the branch from its trunk's snapshot
    if resume is None and trunk_id:
        resume = checkpoint.resume_point(layout.branch_checkpoint_path(spec.results_dir, trunk_id, spec.run_id))
        if resume is None:
            log.warning("run %s: no snapshot of its trunk %s left; it trains from scratch", spec.run_id, trunk_id)
        from_trunk = resume and trunk_id
    if resume:
        log.info("run %s resumes from %s", spec.run_id, resume)
    with ranks.workers(spec, resume, branches):
        return fit_rank(spec, resume, track=True, branches=branches, trunk_id=from_trunk)


def fit_rank(spec: RunSpec, resume: Path | None, track: bool, branches: list[RunSpec] = (),
             trunk_id: str | None = None) -> dict:
    """One rank of a run; every rank builds the same model and data, only the tracked one logs to W&B."""
    corpus = prepare_corpus(spec.data)
    t = spec.train
    shape, hp, hp_source = schedule_steps(spec, corpus.vocab_size)
    batch_size = hp["batch_size"]
    L.seed_everything(spec.seed, workers=True, verbose=False)
    dm = TokenDataModule(corpus, block_size=shape.block_size, batch_size=batch_size, tokens=int(t["tokens"]),
                         seed=spec.seed, val_tokens=spec.data["val_tokens"])
    assert dm.steps == hp["total_steps"], "the data module and the schedule disagree on the run's length"
    if track and dm.repetition_warning:
        log.warning("run %s: %s", spec.run_id, dm.repetition_warning)
    step_tokens = batch_size * shape.block_size
    module = GPTModule(shape, hp, total_steps=dm.steps, flops_per_token=accounting.train_flops_per_token(shape),
                       runs_per_device=spec.trainer.get("runs_per_device", 1))

    eval_every = branching.eval_every(dm.steps, t["eval_points"])
    origin = branching.BranchOrigin(trunk_id)
    accelerator = device.accelerator(spec.accelerator)
    precision = device.precision(t["precision"], accelerator)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    # the corpus fingerprint lets a fit that reads runs back from W&B refuse a mix of datasets (fit/table.py)
    logger = tracking.wandb_logger(spec, config={"model": shape.to_dict(), "train": hp,
                                                 "data": {**spec.data, "fingerprint": corpus.meta["fingerprint"]},
                                                 "seed": spec.seed, "run_id": spec.run_id}) if track else None
    devices = spec.trainer["devices"]
    steady = SteadyRate(step_tokens)
    trainer = L.Trainer(
        accelerator=accelerator, devices=devices, precision=precision, max_steps=dm.steps, max_epochs=1,
        # ranks split each batch themselves (GPTModule._accumulate): no DistributedSampler
        strategy=DDPStrategy(cluster_environment=LightningEnvironment()) if devices > 1 else "auto",
        plugins=None if devices > 1 else [LightningEnvironment()], use_distributed_sampler=False,
        logger=logger or False, log_every_n_steps=t["log_every"], enable_checkpointing=False,
        # Lightning calls plain callbacks in list order: a step's branch snapshot and validation point must come
        # before that step's resume checkpoint, as a trunk resumed from it does not run the step's hooks again
        callbacks=[branching.TrunkSnapshots([branching.snapshot(spec.run_id, b, corpus, batch_size) for b in branches],
                                            dm.val_dataloader(), steady.paused),
                   checkpoint.AtomicCheckpoint(layout.checkpoint_path(spec.results_dir, spec.run_id),
                                               t["checkpoint_every"], steady.paused), origin, steady],
        val_check_interval=eval_every, num_sanity_val_steps=0,
        deterministic=True if accelerator == "cpu" else "warn",
        enable_progress_bar=spec.progress, enable_model_summary=False, default_root_dir=spec.run_dir,
    )
    train_batches = checkpoint.ResumableBatches(dm.train_dataloader().dataset, pin=accelerator == "gpu")
    start = time.perf_counter()
    try:
        trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=dm.val_dataloader(),
                    ckpt_path=resume, weights_only=False)  # our own file: it holds numpy RNG state
        train_seconds = time.perf_counter() - start
        tokens_this_process = module.tokens_seen - train_batches.first_batch * batch_size * shape.block_size
        if not module.val_curve or module.val_curve[-1][0] != module.tokens_seen:
            trainer.validate(module, dataloaders=dm.val_dataloader(), verbose=False)
    finally:
        wandb_info = tracking.finish(logger)
    if module.tokens_seen != dm.tokens_trained:
        raise RuntimeError(f"trained {module.tokens_seen} tokens, planned {dm.tokens_trained}")
    return {
        "shape": shape,
        "tokens": module.tokens_seen,
        "final_val_loss": module.val_curve[-1][1],
        "final_train_loss": module.last_train_loss,
        "val_curve": [list(p) for p in branching.own_curve(module.val_curve, eval_every * step_tokens,
                                                           module.tokens_seen)],
        "hparams": {**hp, "precision": precision, "accelerator": accelerator,
                    "micro_batch_size": module.micro_batch_size},
        "hparams_source": hp_source,
        "data": dm.record_meta,
        "throughput": {"tokens_per_s": tokens_this_process / train_seconds,
                       "flops_per_s": tokens_this_process * module.flops_per_token / train_seconds,
                       "steady_tokens_per_s": steady.tokens_per_s()},
        "wandb": wandb_info,
        "branch": origin.record(module.tokens_seen),
    }
