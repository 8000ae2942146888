#!/usr/bin/env bash
# The lent GPU machine (Python 3.12, CUDA torch, lightning; no network) lacks hydra-core, wandb, datasets, submitit
# and some of their needs; everything else the project imports is already there (tokenizers, cloudpickle, scipy,
# matplotlib, pytest, pyarrow, pandas, fsspec, huggingface_hub; the machine's package list of 2026-11-17).
#   bash scripts/gpu_setup.sh fetch     # here, with network: wheels for Python 3.12 / x86-64 into .whl (~27 MB)
#   bash scripts/gpu_setup.sh install   # there, offline, from the repo root with .whl carried: wheels, then this
#                                       # project without its dependencies (the machine's CUDA torch stays), then a
#                                       # check that every module imports and every dependency is satisfied
# PYTHON (default python3) names the interpreter to install into. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
# what scaling-lab needs beyond the machine's image, at the versions this project's venv tests with
wanted=(hydra-core==1.3.8 hydra-submitit-launcher==1.2.0 wandb==0.31.0 datasets==5.2.0)

fail() { echo "gpu_setup.sh: $*" >&2; exit 1; }

case ${1:-} in
  fetch)
    fetcher=${GPU_WHEELS_FETCHER:-../shared/gpu/fetch-wheels.sh}  # the shared, machine-checked wheel list
    [ -x "$fetcher" ] || fail "no $fetcher (set GPU_WHEELS_FETCHER to the shared fetch-wheels.sh)"
    "$fetcher" .whl
    ;;
  install)
    [ -d .whl ] || fail "no .whl here: run 'bash scripts/gpu_setup.sh fetch' on a networked machine, carry .whl"
    "$py" -m pip install -q --disable-pip-version-check --no-index --find-links .whl "${wanted[@]}" \
      || fail "offline install of ${wanted[*]} from .whl failed (a dependency is missing: see pip's message above)"
    # without a build backend there (setuptools>=64), the checkout itself is importable: gpu_bench.sh puts the repo
    # root on PYTHONPATH, as ../shared/gpu/README.md advises
    "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-build-isolation -e . \
      || echo "gpu_setup.sh: pip install -e . failed (no setuptools>=64?); using the checkout through PYTHONPATH" >&2
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$py" - <<'EOF' || exit 1
import importlib, importlib.metadata as md, pkgutil, sys, tomllib
from packaging.requirements import Requirement

problems = []
with open("pyproject.toml", "rb") as f:  # the checkout's own list: it holds whether or not pip installed it
    requirements = tomllib.load(f)["project"]["dependencies"]
for line in requirements:
    req = Requirement(line)
    try:
        have = md.version(req.name)
    except md.PackageNotFoundError:
        problems.append(f"{req.name} missing")
        continue
    if not req.specifier.contains(have, prereleases=True):
        problems.append(f"{req.name} {have} does not satisfy {req}")
import scaling_lab
for mod in pkgutil.walk_packages(scaling_lab.__path__, "scaling_lab."):
    try:
        importlib.import_module(mod.name)
    except Exception as e:  # noqa: BLE001 - every broken module is named, then the setup fails
        problems.append(f"import {mod.name}: {type(e).__name__}: {e}")
for name in ("pytest", "cloudpickle", "hydra_plugins.hydra_submitit_launcher"):
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        problems.append(f"import {name}: {type(e).__name__}: {e}")
if problems:
    sys.exit("gpu_setup.sh: " + "; ".join(problems))
import torch
cuda = f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "NO CUDA"
print(f"gpu_setup.sh: ready: python {sys.version.split()[0]}, torch {torch.__version__} ({cuda}), "
      + ", ".join(f"{n} {md.version(n)}" for n in ("lightning", "hydra-core", "omegaconf", "wandb", "datasets",
                                                     "tokenizers", "numpy", "pytest")))
EOF
    ;;
  *) fail "usage: bash scripts/gpu_setup.sh fetch|install" ;;
esac
