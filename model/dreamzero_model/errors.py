"""Errors a user can fix: a checkpoint directory that is incomplete, corrupt or does not match."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or inconsistent; the message names the file and the key."""
