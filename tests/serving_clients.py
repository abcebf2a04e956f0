"""Clients of ``dreamzero serve`` for the tests (facts §3.3-3.5): the server as a subprocess, synthetic
sessions, and a session runner for separate processes.

* :class:`ServerProcess`: ``python -m dreamzero_model.serving --checkpoint tiny --port 0`` with the source
  tree on its path; reads the ``listening on ws://...`` line when first asked for its URL, stops with
  SIGTERM and returns the exit status.
* :func:`session_views` / :func:`session_state`: the deterministic observation of call ``k`` of a session
  (seeded), so a chunk can be recomputed elsewhere (the local backend, a solo run).
* :func:`run_session`: one session over a plain connection built like the official DROID client (sync
  websockets, openpi msgpack_numpy); run as a script it writes the chunks to a file, so tests can run
  sessions from separate processes (with :func:`source_environment`); it prints :data:`SENT` after each
  request has left::

      python tests/serving_clients.py URL EMBODIMENT SESSION_ID CALLS SEED FRAMES OUT.npy

No torch and no rclpy here: numpy, websockets, openpi_client, the embodiment layer and the protocol module.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
from openpi_client import msgpack_numpy
from websockets.sync.client import ClientConnection, connect

from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_model.serving.protocol import build_request, embodiment_url, wire_keys
from waiting import PATIENCE_S

REPO = Path(__file__).resolve().parents[1]

PROMPT = "Pick up the cup."
LISTENING = "listening on "
SENT = "sent"  # what the script prints after each request has left


def source_environment() -> dict[str, str]:
    """This environment with the source tree first on ``PYTHONPATH`` and one OpenMP thread (conftest.py)."""
    paths = [str(REPO / "embodiments"), str(REPO / "model"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}


class ServerProcess:
    """``dreamzero serve --checkpoint tiny --port 0 --quiet <arguments>`` in a subprocess; its log goes to a file."""

    def __init__(self, *arguments: str) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="dreamzero-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dreamzero_model.serving", "--checkpoint", "tiny", "--port", "0", "--quiet",
             *arguments], stdout=subprocess.PIPE, stderr=self.log, text=True, env=source_environment())
        self._url = ""

    @property
    def url(self) -> str:
        """The ``ws://host:port`` the server printed, waited for on first use (the caller may load other things
        meanwhile); raises with the log's tail if the server exits or takes longer than :data:`PATIENCE_S`."""
        if not self._url:
            line: list[str] = []
            reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
            reader.start()
            reader.join(PATIENCE_S)
            if not line or not line[0].startswith(LISTENING):
                self.process.kill()
                raise RuntimeError(f"dreamzero serve did not start within {PATIENCE_S:g} s (printed {line!r}); "
                                   f"log:\n{self.log_tail()}")
            self._url = line[0][len(LISTENING):].strip()
        return self._url

    @property
    def http_url(self) -> str:
        return "http" + self.url[len("ws"):]

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (the graceful shutdown), then the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.process.kill()
            self.process.stdout.close()
            self.log.close()

    def log_tail(self, chars: int = 3000) -> str:
        return Path(self.log.name).read_text()[-chars:]


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - loopback test server
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def parse_prometheus(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample of a Prometheus text page; a malformed line fails the test."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.split()[1] in ("HELP", "TYPE"), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def session_views(spec: EmbodimentSpec, seed: int, call: int, frames: int) -> dict[str, np.ndarray]:
    """Camera key -> uint8[frames, H, W, 3] of call ``call`` of session ``seed`` (distinct per call and camera)."""
    rng = np.random.default_rng([seed, call])
    return {c.key: rng.integers(0, 256, (frames, *c.resolution, 3), dtype=np.uint8) for c in spec.cameras}


def session_state(spec: EmbodimentSpec, seed: int, call: int) -> np.ndarray:
    """float64[S] of call ``call`` of session ``seed``, within the tiny model's state range."""
    return np.random.default_rng([seed, call, 1]).uniform(-0.5, 0.5, len(spec.state_names))


def open_session(url: str, spec: EmbodimentSpec, **headers: str) -> tuple[ClientConnection, dict]:
    """A connection to ``url`` (``/<tag>`` added when it has no path) and its handshake map."""
    ws = connect(embodiment_url(url, spec.embodiment_tag), compression=None, max_size=None, proxy=None,
                 additional_headers=headers or None, legacy=True)  # legacy: a plain connection the caller closes
    return ws, msgpack_numpy.unpackb(ws.recv(timeout=120))


def run_session(url: str, spec: EmbodimentSpec, session_id: str, calls: int, seed: int, frames: int,
                on_sent: Callable[[], None] = lambda: None) -> np.ndarray:
    """``calls`` infer requests of one session (first 1 frame per camera, then ``frames``); float32[calls, 24, A].
    ``on_sent`` runs after each request has been sent."""
    ws, _ = open_session(url, spec)
    keys = wire_keys(spec)
    chunks = []
    with ws:
        for call in range(calls):
            request = build_request(session_views(spec, seed, call, 1 if call == 0 else frames),
                                    session_state(spec, seed, call), PROMPT, session_id, spec, keys)
            ws.send(msgpack_numpy.packb(request))
            on_sent()
            reply = ws.recv(timeout=600)
            if isinstance(reply, str):
                raise RuntimeError(f"session {session_id} call {call}: server error:\n{reply}")
            chunks.append(msgpack_numpy.unpackb(reply))
    return np.stack(chunks)


def main(argv: list[str]) -> int:
    url, embodiment, session_id, calls, seed, frames, out = argv
    chunks = run_session(url, load_embodiment(embodiment), session_id, int(calls), int(seed), int(frames),
                         on_sent=lambda: print(SENT, flush=True))
    np.save(out, chunks)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
