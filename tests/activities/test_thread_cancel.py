"""Every synchronous activity is cancelled cooperatively, never by an exception raised
asynchronously in its thread (worker.all_activities says why)."""

from __future__ import annotations

import inspect

from temporalio import activity

from worker import all_activities


def test_no_sync_activity_takes_a_thread_cancel_exception() -> None:
    raising = [
        f.__name__
        for f in all_activities()
        if not inspect.iscoroutinefunction(f)
        and not activity._Definition.must_from_callable(f).no_thread_cancel_exception
    ]
    assert not raising, raising
