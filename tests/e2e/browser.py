"""Driving the dashboard in Debian's headless Chromium (Playwright): what the e2e tests share."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page

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
