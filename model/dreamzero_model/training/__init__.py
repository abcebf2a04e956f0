"""Training DreamZero on LeRobot datasets (ARCHITECTURE.md section 1; facts §1.7-1.10, §6).

Modules, from data to weights:

* :mod:`.sampling`: the official chunk sampler (anchors, frames, actions of one sample, facts §1.8);
* :mod:`.lerobot`: the LeRobot v2.1 reader (pyarrow parquet, PyAV frames, statistics);
* :mod:`.images`: the live image path plus training augmentations (facts §1.7);
* :mod:`.data`: samples as functions of their index, normalised and padded (facts §1.9-1.10);
* :mod:`.model_setup`: tiny or pretrained model, LoRA (peft), frozen encoders -> loss inputs;
* :mod:`.vae_stage`: the tiny VAE trained as an autoencoder (``--init tiny``);
* :mod:`.distributed`: torchrun, DDP, FSDP;
* :mod:`.checkpoints`: atomic checkpoints in the official layout, resume state, final export;
* :mod:`.metrics`: metrics.jsonl and the loss plot; :mod:`.trainer`: the loop;
* :mod:`.config` and :mod:`.cli`: ``dreamzero train`` options, input checks, exit status.

ROS-free: imports torch, numpy, pyarrow, PyAV, peft, the embodiment layer and ``dreamzero_model``.
"""
