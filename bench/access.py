"""What authentication and the audit trail cost the API: appends per second to the audit
store (SQLite, and PostgreSQL when Debian's binaries are installed), token checks per
second, and the API's latency for an authenticated read that Temporal does not answer
(`GET /v1/whoami`: token check + policy + audit append) over HTTP.

    .venv/bin/python bench/access.py [--appends 2000] [--calls 500]

No Temporal, no lab: only the database and the API process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parents[1]))

from fleet.access import parse_policy  # noqa: E402
from fleet.audit import AuditEntry  # noqa: E402
from fleet.store import Store  # noqa: E402
from starters.api import create_app, start_site  # noqa: E402
from starters.api_auth import Auth  # noqa: E402
from tests.access.postgres import Unavailable, postgres_server  # noqa: E402


def store_figures(store: Store, appends: int, label: str) -> None:
    entry = AuditEntry(
        at=datetime.now(UTC), principal="bench", action="bench.append", target="x", result="ok"
    )
    started = time.perf_counter()
    for _ in range(appends):
        store.append(entry)
    elapsed = time.perf_counter() - started
    print(f"{label}: {appends / elapsed:,.0f} audit appends/s ({elapsed / appends * 1e3:.2f} ms)")
    _, token = store.create_token("bench", [])
    started = time.perf_counter()
    for _ in range(appends):
        assert store.verify_token(token) is not None
    elapsed = time.perf_counter() - started
    print(f"{label}: {appends / elapsed:,.0f} token checks/s ({elapsed / appends * 1e3:.2f} ms)")


async def api_figures(store: Store, calls: int) -> None:
    policy = parse_policy(
        {"version": 1, "teams": {"a": {"clusters": "team=a", "viewer": ["user:bench"]}}}
    )
    _, token = store.create_token("bench", [])
    app = create_app(auth=Auth(store=store), address="127.0.0.1:1", policy=policy, store=store)
    site, url = await start_site(app, host="127.0.0.1", port=0)
    latencies = []
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            for _ in range(calls):
                started = time.perf_counter()
                async with session.get(f"{url}/v1/whoami", headers=headers) as response:
                    await response.read()
                    assert response.status == 200
                latencies.append(time.perf_counter() - started)
    finally:
        await site.cleanup()
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"API GET /v1/whoami (token, policy, audit on SQLite): {calls} calls, "
        f"p50 {cuts[49] * 1e3:.1f} ms, p95 {cuts[94] * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        sqlite = Store(str(Path(directory) / "bench.sqlite"))
        store_figures(sqlite, args.appends, "SQLite")
        asyncio.run(api_figures(sqlite, args.calls))
        sqlite.close()
    try:
        with postgres_server() as url:
            store = Store(url)
            store_figures(store, args.appends, "PostgreSQL")
            store.close()
    except Unavailable as exc:
        print(f"PostgreSQL: not measured ({exc})")


if __name__ == "__main__":
    main()
