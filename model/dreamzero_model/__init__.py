"""dreamzero_model: the DreamZero World Action Model in PyTorch (ARCHITECTURE.md section 1).

Owns the causal video-action DiT, the frozen encoders, the flow-matching sampler, the KV-cached
inference session, checkpoint I/O, the training loss and the model server. Imports torch, numpy,
safetensors and field libraries only: never rclpy or a ROS message package (tests/test_layering.py).
"""
