"""Each DR test's watches end with the test: a watch left running would keep probing, and
an automatic one would fail its application over when a later test darks a cluster."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.dr import support


@pytest.fixture(autouse=True)
async def stop_watches() -> AsyncIterator[None]:
    yield
    while support.WATCHES:
        client, workflow_id = support.WATCHES.pop()
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(workflow_id).terminate("test ended")
