"""The fleet overview page in real headless Chromium (Debian's package) on the lab fleet:
the page lists the lab clusters with their labels, version and health, a selector filter
narrows the rows, and a screenshot is saved (the test's tmp dir, and
$FLOTILLA_TEST_ARTIFACTS when set). Served by the API's own routes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from activities.inventory import acquire_lock, release_lock
from fleet.models import LockRelease, LockRequest, OnboardResult
from starters.api import create_app, start_site
from starters.api_auth import Auth
from tests.conftest import RunningWorker
from tests.workflows.rollout_support import (
    Engine,
    engine_fixture,  # noqa: F401  (the `engine` fixture)
    make_fleet,
    release,
    start,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "overview-test-token"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Chromium from Debian's packages at /usr/bin/chromium (apt-get install chromium)",
)


async def rows(page: Any) -> dict[str, list[str]]:
    """Cluster rows: name -> the row's cell texts."""
    found: dict[str, list[str]] = {}
    for row in await page.query_selector_all("#clusters tbody tr"):
        cells = [await c.inner_text() for c in await row.query_selector_all("td")]
        found[cells[0]] = cells
    return found


async def test_overview_page_lists_and_filters_the_lab_fleet(
    worker: RunningWorker,
    onboarded_fleet: dict[str, OnboardResult],
    engine: Engine,
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright

    # A running operation holding a cluster's lock (a scripted rollout that waits).
    selector = await make_fleet(engine, [{"hold": "yes"}], env="test")
    held = f"{selector.removeprefix('suite=')}-00"
    rollout = await start(engine, selector, "rest")
    await acquire_lock(
        worker.client, LockRequest(cluster=held, holder=rollout.id, operation="scripted")
    )
    runner, url = await start_site(
        create_app(auth=Auth(token=TOKEN), client=worker.client), host="127.0.0.1", port=0
    )
    try:
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(
                f"{url}/v1/overview?selector=env%20in%20(prod", headers=headers
            ) as r:
                assert r.status == 400 and "bad selector" in (await r.json())["error"]
            async with session.get(f"{url}/v1/overview") as r:
                assert r.status == 401  # the data needs credentials; the page does not
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(f"{url}/overview#token={TOKEN}")
            await page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            listed = await rows(page)
            assert set(onboarded_fleet) <= set(listed), (sorted(onboarded_fleet), sorted(listed))
            for name, result in onboarded_fleet.items():
                cells = listed[name]
                for key, value in result.record.labels.items():
                    assert f"{key}={value}" in cells[1]
                assert cells[2] == result.record.version and cells[4] == "active", cells
                assert cells[3] in ("healthy", "unknown", "degraded"), cells
            assert "#token" not in page.url  # the token left the address bar

            await page.fill("#selector", "env=prod,region=eu")
            await page.click("#apply")
            await page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            filtered = await rows(page)
            expected = {
                n
                for n, r in onboarded_fleet.items()
                if r.record.labels.get("env") == "prod" and r.record.labels.get("region") == "eu"
            }
            assert expected and expected <= set(filtered) < set(listed), sorted(filtered)
            assert all("env=prod" in c[1] and "region=eu" in c[1] for c in filtered.values())
            assert "selector=env%3Dprod%2Cregion%3Deu" in page.url
            summary = await page.inner_text("#summary")
            assert summary.startswith(f"{len(filtered)} cluster")

            await page.fill("#selector", selector)
            await page.click("#apply")
            await page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            assert list(await rows(page)) == [held]
            assert (await rows(page))[held][5] == f"{rollout.id} (scripted)"
            operation = page.locator(f'#operations tr[data-operation="{rollout.id}"]')
            assert await operation.count() == 1
            link = await operation.locator("a").get_attribute("href")
            assert link == "http://localhost:8233/namespaces/default/workflows/" + quote(
                rollout.id, safe=""
            )
            await page.fill("#selector", "")
            await page.click("#apply")
            await page.wait_for_selector("body[data-loaded=true]", timeout=30_000)

            shot = tmp_path / "overview.png"
            await page.screenshot(path=str(shot), full_page=True)
            await browser.close()
        assert shot.stat().st_size > 10_000
        if artifacts := os.environ.get("FLOTILLA_TEST_ARTIFACTS"):
            os.makedirs(artifacts, exist_ok=True)
            shutil.copy(shot, os.path.join(artifacts, "overview.png"))
    finally:
        await runner.cleanup()
        await release_lock(worker.client, LockRelease(cluster=held, holder=rollout.id))
        await release(engine.client, rollout.id, held)
        await rollout.result()
