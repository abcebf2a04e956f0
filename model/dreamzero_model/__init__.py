"""dreamzero_model: the DreamZero World Action Model in PyTorch (ARCHITECTURE.md section 1).

Owns the causal video-action DiT, the frozen encoders, the flow-matching sampler, the KV-cached
inference session, checkpoint I/O, the training loss and the model server. Imports torch, numpy,
safetensors and field libraries only: never rclpy or a ROS message package (tests/test_layering.py).

Public entry points: :func:`get_config`, :func:`build_dit`, :class:`WamSession`.
"""
from dreamzero_model.config import FLASH_SAMPLER, DiTConfig, SamplerConfig, config_names, get_config
from dreamzero_model.dit import CausalWanModel, build_dit
from dreamzero_model.session import StepResult, WamSession

__all__ = ["FLASH_SAMPLER", "CausalWanModel", "DiTConfig", "SamplerConfig", "StepResult", "WamSession",
           "build_dit", "config_names", "get_config"]
