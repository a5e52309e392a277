"""Small trainable encoder classifiers (PrimalFormer, Primal.+Trans., Transformer) in NumPy."""

from .config import MODELS, ModelConfig, layer_kinds
from .encoder import LossAndGrads, init_model_params, loss_and_grads, model_backward, model_forward

__all__ = [
    "MODELS",
    "ModelConfig",
    "layer_kinds",
    "LossAndGrads",
    "init_model_params",
    "loss_and_grads",
    "model_backward",
    "model_forward",
]
