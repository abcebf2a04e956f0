"""The chunk watchdog holds within 2 action periods of an overdue chunk."""
from __future__ import annotations

from dreamzero_embodiments.watchdog import ChunkWatchdog

DT = 1 / 15
MS = 1_000_000


def test_first_chunk_plays_out_and_a_steady_stream_never_expires() -> None:
    watchdog = ChunkWatchdog(DT, periods=2.0)
    assert not watchdog.expired(0)
    watchdog.on_chunk(0)
    assert not watchdog.expired(10_000 * MS)  # one chunk: no cadence known yet
    for arrival in range(500 * MS, 5000 * MS, 500 * MS):
        watchdog.on_chunk(arrival)
        assert not watchdog.expired(arrival + 499 * MS)


def test_overdue_chunk_expires_after_its_period_plus_two_action_periods() -> None:
    watchdog = ChunkWatchdog(DT, periods=2.0)
    for arrival in (0, 500 * MS, 1000 * MS, 1500 * MS):
        watchdog.on_chunk(arrival)
    limit = 1500 * MS + 500 * MS + round(2 * DT * 1e9)
    assert not watchdog.expired(limit) and watchdog.expired(limit + 1)
    watchdog.reset()
    assert not watchdog.expired(limit + 1)
