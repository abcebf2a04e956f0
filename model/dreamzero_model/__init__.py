"""dreamzero_model: the DreamZero World Action Model in PyTorch (ARCHITECTURE.md section 1).

Owns the causal video-action DiT, the frozen encoders, the flow-matching sampler, the KV-cached
inference session, checkpoint I/O, the training loss and the model server. Imports torch, numpy,
safetensors and field libraries only: never rclpy or a ROS message package (tests/test_layering.py).

Public entry points: :func:`get_config`, :func:`build_dit`, :class:`WamSession`,
:func:`build_full_model` and :class:`WamPolicy` (the last two load transformers and diffusers, so
they are imported on first use).
"""
from dreamzero_model.config import (CACHE_SCHEDULES, FLASH_SAMPLER, DiTConfig, SamplerConfig, config_names,
                                    get_config)
from dreamzero_model.dit import CausalWanModel, build_dit
from dreamzero_model.session import StepResult, WamSession

_LAZY = {"build_full_model": "dreamzero_model.full_model", "get_full_config": "dreamzero_model.full_model",
         "WamPolicy": "dreamzero_model.policy", "Prediction": "dreamzero_model.policy"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dreamzero_model' has no attribute {name!r}")


__all__ = ["CACHE_SCHEDULES", "FLASH_SAMPLER", "CausalWanModel", "DiTConfig", "Prediction", "SamplerConfig",
           "StepResult", "WamPolicy", "WamSession", "build_dit", "build_full_model", "config_names", "get_config",
           "get_full_config"]
