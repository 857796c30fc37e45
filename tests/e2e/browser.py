"""Driving the dashboard in Debian's headless Chromium (Playwright): what the e2e tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")


async def open_view(page: Page, view: str) -> None:
    """Click a view's tab and wait until it has drawn."""
    await page.click(f"#tabs a[data-view={view}]")
    await page.wait_for_selector(f"#view-{view}[data-ready]", state="attached")


async def drawn_pixels(page: Page, selector: str) -> int:
    """How many pixels of a canvas are not blank (the plot drew something)."""
    return await page.eval_on_selector(
        selector,
        """canvas => {
            const {width, height} = canvas;
            const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
            let drawn = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) drawn++;
            return drawn;
        }""",
    )


@asynccontextmanager
async def chromium_page(problems: list[str]) -> AsyncIterator[Page]:
    """A page in headless Chromium, each console error and page error added to `problems`."""
    assert CHROMIUM.exists(), "this test needs Debian's chromium: apt-get install chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            yield page
        finally:
            await browser.close()


async def served_and_audit_views(
    base: str, key: str, task: str, prediction_id: str | None = None
) -> dict:
    """What a viewer signed in with `key` sees of a task: the served-figure view's heading and
    how much of its plot is drawn, the audit view's text, and any browser error; with
    `prediction_id`, the lineage view of that prediction: its text and how many bars explain it."""
    problems: list[str] = []
    async with chromium_page(problems) as page:
        await page.goto(f"{base}/dashboard#task={task}")
        await page.fill("#key", key)
        await page.click("#signin-form button")
        await page.wait_for_selector("#view-accuracy[data-ready]", state="attached")
        heading = await page.inner_text("#view-accuracy h2")
        pixels = await drawn_pixels(page, "#accuracy-chart canvas")
        await open_view(page, "audits")
        audit = await page.inner_text("#view-audits")
        lineage, bars = "", 0
        if prediction_id is not None:
            await open_view(page, "lineage")
            await page.fill("#prediction-id", prediction_id)
            await page.click("#view-lineage .lookup button")
            await page.wait_for_selector("#lineage-out[data-ready] #lineage-flow")
            lineage = await page.inner_text("#lineage-out")
            bars = await page.locator("#contributions rect").count()
    return {
        "problems": problems,
        "heading": heading,
        "pixels": pixels,
        "audit": audit,
        "lineage": lineage,
        "bars": bars,
    }
