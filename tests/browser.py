"""Debian's chromium driven by Playwright, started the one way every browser test here needs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium(home: Path) -> Iterator[Any]:
    """A headless chromium (no downloaded browser: ``playwright install`` cannot reach the internet here) whose
    profile lives under ``home``, since chromium writes ~/.config/chromium."""
    from playwright.sync_api import sync_playwright

    os.environ["HOME"] = str(home)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
