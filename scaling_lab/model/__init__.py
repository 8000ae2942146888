from scaling_lab.model.config import SHAPES, ModelConfig, ShapeError

__all__ = ["SHAPES", "ModelConfig", "ShapeError"]
