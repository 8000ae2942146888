"""Model shapes as data: a registry of named shapes plus free n_layer / d_model / n_head.

No torch here: the accounting module and the planner read shapes without building a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from scaling_lab import checks

# Named shapes. The tiny-* ladder fits a 2-core CPU sweep in minutes; the gpt-* ladder is the GPU
# yardstick of nanoGPT-style shapes (params quoted for vocabulary 50,304 and context 1,024).
SHAPES: dict[str, dict[str, int]] = {
    "tiny-1": dict(n_layer=1, d_model=32, n_head=2),
    "tiny-2": dict(n_layer=2, d_model=48, n_head=3),
    "tiny-3": dict(n_layer=2, d_model=64, n_head=4),
    "tiny-4": dict(n_layer=3, d_model=96, n_head=4),
    "tiny-5": dict(n_layer=4, d_model=128, n_head=4),
    # small-*: a GPU ladder for byte-level sweeps (sweep=h100_quick): d_model = 64 x n_layer and 64-wide heads, as
    # GPT-2's shapes; 0.4M..49M non-embedding parameters
    "small-1": dict(n_layer=2, d_model=128, n_head=2),
    "small-2": dict(n_layer=3, d_model=192, n_head=3),
    "small-3": dict(n_layer=4, d_model=256, n_head=4),
    "small-4": dict(n_layer=6, d_model=384, n_head=6),
    "small-5": dict(n_layer=8, d_model=512, n_head=8),
    "small-6": dict(n_layer=10, d_model=640, n_head=10),
    "gpt-7m": dict(n_layer=2, d_model=128, n_head=4),
    "gpt-16m": dict(n_layer=4, d_model=256, n_head=4),
    "gpt-30m": dict(n_layer=6, d_model=384, n_head=6),
    "gpt-51m": dict(n_layer=8, d_model=512, n_head=8),
    "gpt-124m": dict(n_layer=12, d_model=768, n_head=12),
    "gpt-253m": dict(n_layer=16, d_model=1024, n_head=16),
}


PARAMETRIZATIONS = ("standard", "mup")  # standard: GPT-2 init and LR; mup: Yang et al. 2022


class ShapeError(ValueError):
    """A model shape that cannot be built; the message names the offending key."""


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab_size: int
    block_size: int
    name: str | None = None
    mlp_ratio: int = 4
    parametrization: str = "standard"  # or "mup" (scaling_lab/model/mup.py)
    mup_base_width: int | None = None  # under mup: the width whose hyperparameters the others inherit

    def __post_init__(self) -> None:
        for key in ("n_layer", "d_model", "n_head", "vocab_size", "block_size", "mlp_ratio"):
            checks.count(f"model.{key}", getattr(self, key), error=ShapeError)
        if self.parametrization not in PARAMETRIZATIONS:
            raise ShapeError(f"model.parametrization={self.parametrization!r} is not one of {PARAMETRIZATIONS}")
        if self.parametrization == "mup":
            checks.count("model.mup_base_width", self.mup_base_width, error=ShapeError)
        if self.d_model % self.n_head:
            raise ShapeError(
                f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def resolve(cls, name: str | None, vocab_size: int, block_size: int, parametrization: str = "standard",
                mup_base_width: int | None = None, **shape: int) -> ModelConfig:
        """A named shape from SHAPES, or the free n_layer / d_model / n_head when name is null."""
        if name is not None:
            if name not in SHAPES:
                raise ShapeError(f"model.name={name!r} is not a known shape; known: {', '.join(SHAPES)}")
            shape = SHAPES[name]
        return cls(vocab_size=vocab_size, block_size=block_size, name=name, parametrization=parametrization,
                   mup_base_width=mup_base_width, **shape)

    @classmethod
    def from_config(cls, model: Mapping[str, Any], vocab_size: int) -> ModelConfig:
        """The shape a `model` config group asks for (conf/model/default.yaml), given the tokenizer's vocabulary."""
        try:
            return cls.resolve(model["name"], vocab_size=vocab_size, block_size=model["block_size"],
                               n_layer=model["n_layer"], d_model=model["d_model"], n_head=model["n_head"],
                               parametrization=model.get("parametrization", "standard"),
                               mup_base_width=model.get("mup_base_width"))
        except TypeError as e:
            raise ShapeError(f"model shape: {e}") from e

    def to_dict(self) -> dict:
        return asdict(self)
