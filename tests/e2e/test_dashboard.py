"""The dashboard in headless Chromium (Debian's, driven by Playwright) on a real run: the closed
loop streams a drifting task through the four services (drift alarm, shadow, canary, promotions,
a rolled-back canary), an operator then runs a canary, a shadow and a flag, and a viewer key opens
the page. Each view must show what governance's API says, its plots drawn; nothing is loaded from
another origin and the browser logs no error.

Screenshots of each view go to the test's directory; with CONTINUO_SCREENSHOTS=1 also to
docs/dashboard/ (the ones the README shows), so that `make test` leaves the tree as it was.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page
from sqlalchemy.ext.asyncio import create_async_engine

from continuo.caller import wait_until_learned
from continuo.loop import loop_spec, run_loop
from continuo.stack import Stack, write_task_specs
from services.governance.auth import Role, create_key
from shared.settings import REPO_ROOT
from tests.e2e.browser import CHROMIUM, chromium_page, drawn_pixels, open_view
from tests.support import eventually

DOCS = REPO_ROOT / "docs" / "dashboard"
VIEWS = ("accuracy", "routing", "audits", "lineage", "trail")


async def _operator_runs_every_arm(gov: httpx.AsyncClient, task: str) -> None:
    """A canary on 20% of entities, a shadow and a flag, on versions the run retired."""
    models = (await gov.get(f"/v1/tasks/{task}/models")).json()["models"]
    spare = [m["model_version"] for m in models if m["status"] in ("retired", "stopped")]
    assert len(spare) >= 2, models
    why = {"reason": "dashboard test: every arm on"}
    for method, path, body in (
        ("post", "canary", {**why, "model_version": spare[-1], "weight": 20}),
        ("post", "shadows", {**why, "model_version": spare[-2], "sample_rate": 0.5}),
        (
            "put",
            "flags/new_checkout",
            {
                **why,
                "flag": {
                    "type": "string",
                    "value": "old",
                    "variants": {"old": "old", "new": "new"},
                    "weights": {"old": 70, "new": 30},
                },
            },
        ),
    ):
        response = await getattr(gov, method)(f"/v1/tasks/{task}/{path}", json=body)
        assert response.status_code == 200, response.text


async def _settled(gov: httpx.AsyncClient, task: str) -> None:
    """Until the versions, their statuses and the served windows stay the same for 3 s (the
    last version can stay a candidate: it waits for rows it never learned, which never come)."""
    base = f"/v1/tasks/{task}"

    async def now() -> tuple[Any, ...]:
        models = (await gov.get(f"{base}/models")).json()["models"]
        windows = (await gov.get(f"{base}/served-accuracy")).json()["windows"]
        return tuple((m["model_version"], m["status"]) for m in models), len(windows)

    async def quiet() -> bool:
        before = await now()
        await asyncio.sleep(3)
        return before == await now()

    await eventually(quiet, timeout=60)


async def _a_prediction(gov: httpx.AsyncClient, task: str, models: list[dict]) -> str:
    """The newest answer of the newest version that gave any (a version promoted as the stream
    ended may not have answered yet)."""
    for version in sorted((m["model_version"] for m in models), reverse=True):
        path = f"/v1/tasks/{task}/models/{version}/predictions"
        found = (await gov.get(path, params={"limit": 1})).json()["predictions"]
        if found:
            return str(found[0]["prediction_id"])
    raise AssertionError("no version answered anything")


async def _truth(gov: httpx.AsyncClient, task: str) -> dict[str, Any]:
    """What governance's API says, to hold the page to."""
    base = f"/v1/tasks/{task}"
    routing = (await gov.get(f"{base}/routing")).json()
    models = (await gov.get(f"{base}/models")).json()
    prediction_id = await _a_prediction(gov, task, models["models"])
    trail = (
        await gov.get(f"{base}/trail", params={"type": "ModelPromoted", "limit": 5000})
    ).json()["events"]
    # The two reads the dashboard added agree with the general ones.
    latest = (await gov.get(f"{base}/audits/latest")).json()
    for scope in ("candidate", "live"):
        every = (await gov.get(f"{base}/audits", params={"scope": scope})).json()["audits"]
        assert latest[scope] == (every[-1] if every else None)
    champion = routing["champion"]["model_version"]
    newest = (await gov.get(f"{base}/models/{champion}/predictions", params={"limit": 5})).json()
    positions = [p["position"] for p in newest["predictions"]]
    assert positions == sorted(positions, reverse=True)
    return {
        "models": models,
        "routing": routing,
        "audits": latest,
        "served": (await gov.get(f"{base}/served-accuracy")).json(),
        "promotions": [e["payload"]["model_version"] for e in trail],
        "prediction_id": prediction_id,
        "prediction": (await gov.get(f"/v1/predictions/{prediction_id}")).json(),
    }


async def _shoot(page: Page, view: str, directory: Path) -> None:
    whole = view != "trail"  # the trail is as long as the run: its first screen shows enough
    await page.screenshot(path=directory / f"{view}.png", full_page=whole)
    if os.environ.get("CONTINUO_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOCS / f"{view}.png", full_page=whole)


async def test_the_dashboard_shows_a_real_run_in_every_view(sqlite_url: str, tmp_path: Path):
    assert CHROMIUM.exists(), "the dashboard test needs Debian's chromium: apt-get install chromium"
    spec = loop_spec()
    task = spec.name
    stack = Stack(
        tmp_path, store_url=sqlite_url, env_overrides=write_task_specs(tmp_path / "tasks", [spec])
    )
    await stack.start()
    try:
        run = await run_loop(stack, task=task)
        await wait_until_learned(stack.url("trainer"), task, run.rows, timeout=90)
        async with httpx.AsyncClient(
            base_url=stack.url("governance"), headers=stack.governance_headers(), timeout=30
        ) as gov:
            await _settled(gov, task)
            await _operator_runs_every_arm(gov, task)
            truth = await _truth(gov, task)
        # A viewer key, made as `continuo keys create` makes one: reading is all the page does.
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'governance.db'}")
        _, key = await create_key(engine, "dashboard-test", Role.VIEWER)
        await engine.dispose()
        base = stack.url("governance")
        async with httpx.AsyncClient(base_url=base) as anonymous:
            shell = await anonymous.get("/dashboard")
            refused = await anonymous.get(f"/v1/tasks/{task}/audits/latest")
        await _browse(base, key, task, truth, tmp_path)
    finally:
        stack.stop()

    # The page is public and holds no data; the data is not.
    assert shell.status_code == 200 and task not in shell.text
    assert "default-src 'none'" in shell.headers["content-security-policy"]
    assert refused.status_code == 401


async def _browse(base: str, key: str, task: str, truth: dict[str, Any], shots: Path) -> None:
    problems: list[str] = []
    elsewhere: list[str] = []
    async with chromium_page(problems) as page:
        page.on(
            "request",
            lambda r: None if r.url.startswith(base) else elsewhere.append(r.url),
        )
        await page.goto(f"{base}/dashboard#task={task}")
        assert await page.is_hidden("#tabs") and await page.is_visible("#signin")
        # A key governance does not know is refused, and the form asks again.
        await page.fill("#key", "cnt_000000000000_" + "x" * 43)
        await page.click("#signin-form button")
        await page.wait_for_selector("#signin-error", state="visible")
        assert "refused" in await page.inner_text("#signin-error")
        assert await page.is_hidden("#tabs")
        await page.fill("#key", key)
        await page.click("#signin-form button")
        await page.wait_for_selector("#view-accuracy[data-ready]", state="attached")
        await _accuracy(page, truth)
        await _shoot(page, "accuracy", shots)
        for view, check in (
            ("routing", _routing),
            ("audits", _audits),
            ("lineage", _lineage),
            ("trail", _trail),
        ):
            await open_view(page, view)
            await check(page, truth)
            await _shoot(page, view, shots)
    # The only errors the browser logs are the refused key's 401s.
    assert not [p for p in problems if "status of 401" not in p], problems
    assert not elsewhere, elsewhere
    for view in VIEWS:
        assert (shots / f"{view}.png").stat().st_size > 10_000


async def _accuracy(page: Page, truth: dict[str, Any]) -> None:
    assert await page.inner_text("#champion-version") == f"v{truth['models']['champion']}"
    chart = page.locator("#accuracy-chart")
    windows = {w["to_position"] for w in truth["served"]["windows"]}
    assert int(await chart.get_attribute("data-windows") or 0) == len(windows) >= 2
    assert int(await chart.get_attribute("data-points") or 0) >= 2
    assert int(await chart.get_attribute("data-markers") or 0) >= len(truth["promotions"])
    assert await drawn_pixels(page, "#accuracy-chart canvas") > 5000
    legend = await page.inner_text("#accuracy-chart .u-legend")
    assert "all answers" in legend and f"v{truth['models']['champion']} champion" in legend


async def _routing(page: Page, truth: dict[str, Any]) -> None:
    routing = truth["routing"]
    assert await page.inner_text("#routing-champion") == f"v{routing['champion']['model_version']}"
    assert await page.inner_text("#routing-canary") == f"v{routing['canary']['model_version']}"
    split = await page.text_content("#traffic") or ""
    assert f"canary v{routing['canary']['model_version']} · 20%" in split
    text = await page.text_content("#view-routing") or ""
    assert f"shadow v{routing['shadows'][0]['model_version']}" in text and "new_checkout" in text
    strip = page.locator("#version-strip rect")
    assert await strip.count() == len(truth["models"]["models"])


async def _audits(page: Page, truth: dict[str, Any]) -> None:
    candidate = truth["audits"]["candidate"]
    card = page.locator(".audit[data-scope=candidate]")
    assert f"model v{candidate['model_version']}" in await card.locator("h2").inner_text()
    groups = candidate["report"]["attributes"]["group"]["groups"]
    assert set(groups) == {"a", "b"}
    bars = card.locator(".group-bars rect")
    assert await bars.count() >= 2 * 3  # two groups, at least three figures each
    text = await card.text_content() or ""
    assert f"{groups['a']['count']:,} rows" in text and "equalized-odds difference" in text


async def _lineage(page: Page, truth: dict[str, Any]) -> None:
    prediction_id = truth["prediction_id"]
    await page.fill("#prediction-id", prediction_id)
    await page.click("#view-lineage .lookup button")
    await page.wait_for_selector("#lineage-out[data-ready] #lineage-flow")
    version = truth["prediction"]["model"]["model_version"]
    assert await page.inner_text("#lineage-model") == f"model v{version}"
    assert prediction_id in await page.inner_text("#lineage-flow")
    assert await page.locator("#contributions rect").count() >= 4


async def _trail(page: Page, truth: dict[str, Any]) -> None:
    promoted = page.locator("#trail-list li[data-type=ModelPromoted]")
    assert await promoted.count() == len(truth["promotions"]) >= 1
    newest = truth["promotions"][-1]
    assert f"v{newest}" in await promoted.first.inner_text()
    assert await page.locator("#trail-list li[data-type=CanaryEnded]").count() >= 1
