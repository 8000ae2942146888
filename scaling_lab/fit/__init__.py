"""The fit stage: scaling laws, compute-optimal allocation and a diminishing-returns verdict from run records.

Reads only run records (scaling_lab.records), CSVs or W&B; never training code.
"""

from scaling_lab.fit.run import run_fit
from scaling_lab.fit.table import FitInputError

__all__ = ["FitInputError", "run_fit"]
