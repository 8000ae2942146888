"""Model shapes as data: a registry of named shapes plus free n_layer / d_model / n_head.

No torch here: the accounting module, the planner and the fit read shapes without building a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Named shapes. The tiny-* ladder fits a 2-core CPU sweep in minutes; the gpt-* ladder is the GPU
# yardstick of nanoGPT-style shapes (params quoted for vocabulary 50,304 and context 1,024).
SHAPES: dict[str, dict[str, int]] = {
    "tiny-1": dict(n_layer=1, d_model=32, n_head=2),
    "tiny-2": dict(n_layer=2, d_model=48, n_head=3),
    "tiny-3": dict(n_layer=2, d_model=64, n_head=4),
    "tiny-4": dict(n_layer=3, d_model=96, n_head=4),
    "tiny-5": dict(n_layer=4, d_model=128, n_head=4),
    "gpt-7m": dict(n_layer=2, d_model=128, n_head=4),
    "gpt-16m": dict(n_layer=4, d_model=256, n_head=4),
    "gpt-30m": dict(n_layer=6, d_model=384, n_head=6),
    "gpt-51m": dict(n_layer=8, d_model=512, n_head=8),
    "gpt-124m": dict(n_layer=12, d_model=768, n_head=12),
    "gpt-253m": dict(n_layer=16, d_model=1024, n_head=16),
}


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

    def __post_init__(self) -> None:
        for key in ("n_layer", "d_model", "n_head", "vocab_size", "block_size", "mlp_ratio"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ShapeError(f"model.{key} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise ShapeError(
                f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def resolve(cls, name: str | None, vocab_size: int, block_size: int, **shape: int) -> ModelConfig:
        """A named shape from SHAPES, or the free n_layer / d_model / n_head when name is null."""
        if name is not None:
            if name not in SHAPES:
                raise ShapeError(f"model.name={name!r} is not a known shape; known: {', '.join(SHAPES)}")
            shape = SHAPES[name]
        return cls(vocab_size=vocab_size, block_size=block_size, name=name, **shape)

    def to_dict(self) -> dict:
        return asdict(self)
