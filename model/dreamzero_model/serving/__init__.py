"""``dreamzero serve``: the DreamZero WebSocket model server (ARCHITECTURE.md sections 1 and 6; facts §3.3-3.7).

Modules, from the wire to the model:

* :mod:`.protocol`: the DreamZero / RoboArena wire protocol, shared with the remote backend (no torch);
* :mod:`.server`: the asyncio WebSocket server, HTTP health and metrics, warm-up, graceful shutdown;
* :mod:`.sessions`: per-session frame buffers (the official frame rule), idle timeout, eviction;
* :mod:`.scheduler`: the worker thread that owns the engine, FIFO across sessions, calls queued together
  handed over as one batch;
* :mod:`.engine`: the model loaded once, one inference context per session; aligned calls of a batch
  denoised together (its docstring says which calls batch);
* :mod:`.metrics`: Prometheus text; :mod:`.cli`: the command's options and exit status.

ROS-free: imports torch, numpy, websockets, msgpack, openpi_client, tqdm and the embodiment layer.
"""
