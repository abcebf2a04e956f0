"""dreamzero_model: the DreamZero World Action Model in PyTorch (ARCHITECTURE.md section 1).

Owns the causal video-action DiT, the frozen encoders, the flow-matching sampler, the KV-cached
inference session, checkpoint I/O, the training loss and the model server. Imports torch, numpy,
safetensors and field libraries only: never rclpy or a ROS message package (tests/test_layering.py).

Public entry points: :func:`get_config`, :func:`build_dit`, :class:`WamSession`,
:func:`build_full_model` and :class:`WamPolicy`, all imported on first use.
"""
# Every name is imported on first use: torch (seconds; dreamzero_model.config builds through
# dreamzero_model.construction), and transformers and diffusers for the model and the policy. So torch-free
# submodules, such as dreamzero_model.serving.protocol (the remote backend's wire format), load without torch.
_LAZY = {**dict.fromkeys(("CACHE_SCHEDULES", "FLASH_SAMPLER", "DiTConfig", "SamplerConfig", "config_names",
                          "get_config"), "dreamzero_model.config"),
         "CausalWanModel": "dreamzero_model.dit", "build_dit": "dreamzero_model.dit",
         "StepResult": "dreamzero_model.session", "WamSession": "dreamzero_model.session",
         "build_full_model": "dreamzero_model.full_model", "get_full_config": "dreamzero_model.full_model",
         "WamPolicy": "dreamzero_model.policy", "Prediction": "dreamzero_model.policy"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dreamzero_model' has no attribute {name!r}")


__all__ = ["CACHE_SCHEDULES", "FLASH_SAMPLER", "CausalWanModel", "DiTConfig", "Prediction", "SamplerConfig",
           "StepResult", "WamPolicy", "WamSession", "build_dit", "build_full_model", "config_names", "get_config",
           "get_full_config"]
