"""Query scheduling: the next query leads the end of the executed steps by the measured latency."""
from __future__ import annotations

import pytest

from dreamzero_embodiments.scheduling import QueryScheduler

DT = 1 / 15
SECOND = 10**9


def test_first_query_is_due_at_once_and_after_reset() -> None:
    scheduler = QueryScheduler(execute_steps=24, dt_s=DT)
    assert scheduler.due(0)
    scheduler.record(t_obs_ns=5 * SECOND, latency_s=0.2)
    assert not scheduler.due(5 * SECOND)
    scheduler.reset()
    assert scheduler.due(5 * SECOND)


def test_next_query_leads_by_the_median_latency() -> None:
    scheduler = QueryScheduler(execute_steps=12, dt_s=DT)
    for latency in (0.3, 0.3, 5.0):  # one slow call does not move the median
        scheduler.record(t_obs_ns=10 * SECOND, latency_s=latency)
    due = 10 * SECOND + round((12 * DT - 0.3) * SECOND)
    assert scheduler.next_due_ns() == due
    assert not scheduler.due(due - 1) and scheduler.due(due)


def test_official_cadence_is_one_query_per_chunk_without_latency() -> None:
    scheduler = QueryScheduler(execute_steps=24, dt_s=DT)
    scheduler.record(t_obs_ns=0, latency_s=0.0)
    assert scheduler.next_due_ns() == round(24 * DT * SECOND)


def test_execute_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="execute_steps must be >= 1"):
        QueryScheduler(execute_steps=0, dt_s=DT)


def test_hold_until_pauses_queries_after_a_failure() -> None:
    scheduler = QueryScheduler(execute_steps=24, dt_s=DT)
    scheduler.hold_until(3 * SECOND)
    assert not scheduler.due(2 * SECOND) and scheduler.due(3 * SECOND)
