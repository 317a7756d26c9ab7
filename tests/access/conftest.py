"""Fixtures of the access tests: a real PostgreSQL server (skipped, saying why, when
Debian's postgresql is not installed; .ci/run installs it) and the CLI fixtures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.access.postgres import Unavailable, postgres_server
from tests.starters.conftest import cli_env, flotilla  # noqa: F401  (the CLI fixtures)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except Unavailable as exc:
            pytest.skip(str(exc))
        yield url
