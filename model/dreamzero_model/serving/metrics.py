"""The model server's metrics as Prometheus text (``GET /metrics``, exposition format 0.0.4).

Counters (calls by endpoint, infer calls by batch size, errors by cause, session evictions and expirations,
replies discarded because the client had gone) and summaries of per-call seconds: ``infer`` (request received
-> reply ready), ``model`` (the policy's forward), ``overhead`` (the difference: decoding, validation, queueing,
stitching, encoding) and ``queue_wait``. A summary's quantiles cover the newest :data:`SUMMARY_WINDOW` calls, its
``_sum`` and ``_count`` every call. Gauges (queue depth, live sessions, readiness, memory) are read when
rendered. Updated on the event loop only. Imports the standard library only.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable

PREFIX = "dreamzero_"
SUMMARY_WINDOW = 1024            # newest calls a summary's quantiles cover
QUANTILES = (0.5, 0.95)
SUMMARIES = {"infer_seconds": "Seconds from an infer request's arrival to its reply being ready.",
             "model_seconds": "Seconds of the model forward of an infer call.",
             "overhead_seconds": "Seconds of an infer call outside the model forward (decode, validation, queue, "
                                 "stitching, encoding).",
             "preprocess_seconds": "Seconds of an infer call's image preprocessing (crop, resize, mosaic), part of "
                                   "its overhead.",
             "queue_wait_seconds": "Seconds an infer call waited for the engine worker."}


class Summary:
    """Quantiles over a sliding window, plus the sum and count of every observation."""

    def __init__(self) -> None:
        self._window: deque[float] = deque(maxlen=SUMMARY_WINDOW)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._window.append(value)
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the window (nearest rank); NaN when empty."""
        if not self._window:
            return math.nan
        ordered = sorted(self._window)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Metrics:
    """What ``/metrics`` reports besides the gauges passed to :meth:`render`."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()     # endpoint -> answered calls
        self.batch_sizes: Counter[int] = Counter()  # chunks denoised together -> infer calls answered so
        self.errors: Counter[str] = Counter()    # cause -> refused or failed calls and connections
        self.replies_discarded = 0
        self.summaries = {name: Summary() for name in SUMMARIES}

    def render(self, gauges: Iterable[tuple[str, str, float]], evictions: int, expirations: int) -> str:
        """The Prometheus text: the counters and summaries, ``gauges`` as (name, help, value) and the session
        table's ``evictions`` and ``expirations`` counts."""
        lines: list[str] = []

        def family(name: str, kind: str, text: str, samples: Iterable[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {PREFIX}{name} {text}", f"# TYPE {PREFIX}{name} {kind}"])
            lines.extend(f"{PREFIX}{name}{labels} {_number(value)}" for labels, value in samples)

        family("calls_total", "counter", "Calls answered, by endpoint.",
               [(f'{{endpoint="{e}"}}', n) for e, n in sorted(self.calls.items())] or [('{endpoint="infer"}', 0)])
        family("batched_calls_total", "counter", "Infer calls answered, by how many calls' chunks were denoised "
               "together in one batched model pass (batch_size 1: alone; batches of k = this count / k).",
               [(f'{{batch_size="{k}"}}', n) for k, n in sorted(self.batch_sizes.items())]
               or [('{batch_size="1"}', 0)])
        family("errors_total", "counter", "Calls and connections refused or failed, by cause.",
               [(f'{{cause="{c}"}}', n) for c, n in sorted(self.errors.items())] or [('{cause="request"}', 0)])
        family("session_evictions_total", "counter", "Idle sessions evicted to make room (--max-sessions).",
               [("", evictions)])
        family("session_expirations_total", "counter", "Sessions dropped after the idle timeout.", [("", expirations)])
        family("replies_discarded_total", "counter", "Replies not sent because the client had gone.",
               [("", self.replies_discarded)])
        for name, text in SUMMARIES.items():
            summary = self.summaries[name]
            family(name, "summary", text, [*((f'{{quantile="{q}"}}', summary.quantile(q)) for q in QUANTILES)])
            lines.extend([f"{PREFIX}{name}_sum {_number(summary.sum)}", f"{PREFIX}{name}_count {summary.count}"])
        for name, text, value in gauges:
            family(name, "gauge", text, [("", value)])
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return "NaN" if isinstance(value, float) and math.isnan(value) else f"{value:.9g}"
