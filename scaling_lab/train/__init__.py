"""The TRAIN stage: one run from a composed config to a run record. Never imports scaling_lab.fit."""

import logging
import warnings

# Lightning's INFO banners (devices, tips, "max_steps reached") would repeat for every run of a sweep
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch >= 2.10, harmless
