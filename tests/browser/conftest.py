"""Headless Debian Chromium driven by Playwright, with every non-loopback request blocked.

Playwright's own browser downloads are not used: the system's `chromium` (installed by
ci/browser-setup.sh) is launched through `executable_path`. The async API is used so that the
browser shares pytest-asyncio's session event loop with the other async tests.
"""

import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, async_playwright

from tests.helpers import require

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = frozenset({"127.0.0.1"})
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})


@dataclass
class Traffic:
    """What the page asked for: blocked outbound requests, console errors, script errors."""

    outbound: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless (skips, or fails under GRADCHECK_REQUIRE_ALL=1, without it).

    Playwright starts every launch with a new temporary profile (--user-data-dir).
    """
    executable = shutil.which("chromium")
    require(executable is not None, "Debian's chromium is not installed: bash ci/browser-setup.sh")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest.fixture
def traffic() -> Traffic:
    """The record of the current test's page."""
    return Traffic()


@pytest.fixture
async def page(browser: Browser, traffic: Traffic) -> AsyncIterator[Page]:
    """A page in a new context where every request not to 127.0.0.1 is aborted and counted."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})

    async def guard(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOOPBACK:
            await route.continue_()
        else:
            traffic.outbound.append(route.request.url)
            await route.abort()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            traffic.console_errors.append(message.text)

    await context.route("**/*", guard)
    page = await context.new_page()
    page.on("console", on_console)
    page.on("pageerror", lambda error: traffic.page_errors.append(str(error)))
    yield page
    await context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/browser/, where the screenshots go."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
