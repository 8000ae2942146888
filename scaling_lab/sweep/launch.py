"""From a sweep preset to launch-ready runs: a grid's jobs, or a design's planned runs registered with Hydra.

Both end as manifest entries (sweep.json) and a multirun command line; run inside an initialized Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling_lab.data import TokenCorpus, prepare_corpus
from scaling_lab.fit.run import settings as fit_settings
from scaling_lab.sweep import branch, designs, grid, packed
from scaling_lab.train import device
from scaling_lab.train.run import ConfigError

# Hydra launchers whose jobs run on this machine (basic, joblib, submitit's local one, packed): a GPU they need must
# be here. A cluster launcher's jobs find their GPUs on the nodes, so a CPU login node can submit them.
_LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher", "LocalLauncher", packed.PackedLauncher.__name__)


@dataclass
class Sweep:
    cfg: dict  # the preset composed without its sweep overrides, resolved
    name: str | None
    results_dir: str
    runs: list[dict]  # manifest entries
    user_overrides: list[str]
    overrides: list[str]  # the multirun's command line: the user's plus the design's runs or the branched jobs
    design: designs.Design | None
    corpus: TokenCorpus
    concurrent_jobs: int  # jobs of the multirun that its launcher runs at once (hydra/launcher=packed: > 1)

    @property
    def extends(self) -> bool:
        return bool(self.design and self.design.kind == "isoflop" and self.cfg["sweep"].get("extend_edges"))


def prepare(config_name: str, overrides: list[str]) -> Sweep:
    cfg, launcher = grid.preset(config_name, overrides)
    if launcher._target_.rsplit(".", 1)[-1] in _LOCAL_LAUNCHERS:
        device.accelerator(cfg["accelerator"])  # accelerator=gpu without one: one line, before any corpus is built
    if cfg["sweep"].get("fit", True):
        fit_settings(cfg["fit"])  # a typo in fit.* fails now, in one line, not after the sweep has trained
    jobs = None if cfg["sweep"].get("design") else grid.jobs(config_name, overrides)  # each checked, cheaply
    # built (or verified) once here, not by every run at once when a launcher starts them in parallel; its
    # vocabulary sizes a design's shapes and every run's schedule, and the planner counts epochs with it
    corpus = prepare_corpus(cfg["data"])
    design = designs.from_config(cfg, corpus.vocab_size) if jobs is None else None
    sweep = Sweep(cfg, None, "", [], overrides, overrides, design, corpus,
                  packed.concurrent_jobs(launcher, cfg["accelerator"]))
    if design is not None:
        designs.check_overrides(overrides)
        add_runs(sweep, config_name, design.runs(corpus.vocab_size))
    else:
        sweep.name, sweep.results_dir, sweep.runs = grid.plan(jobs, corpus.vocab_size)
    if cfg["sweep"].get("branch"):
        if design is not None:
            raise ConfigError("sweep.branch works on grid presets (train.tokens as a sweep key), not sweep.design")
        sweep.overrides = branch.multirun(config_name, overrides, sweep.runs)
    return sweep


def add_runs(sweep: Sweep, config_name: str, planned: list[designs.Planned]) -> list[str]:
    """Register planned runs, add their manifest entries; return the multirun command line that trains them."""
    extra, by_name = designs.register(planned)
    command = [*sweep.user_overrides, *extra]
    sweep.name, sweep.results_dir, runs = grid.plan(grid.jobs(config_name, command), sweep.corpus.vocab_size)
    sweep.runs += designs.annotate(runs, by_name)
    sweep.overrides = command
    return command
