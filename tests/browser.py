"""A real headless Chromium (the system's, driven by Playwright) that may load file:// URLs only.

Every other request is aborted and recorded, and so is any request that fails, so a test can assert that a
page rendered offline with nothing missing. Screenshots come back as Pillow images.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class OfflinePage:
    page: object
    external: list[str] = field(default_factory=list)  # requests that would have left the machine
    failed: list[str] = field(default_factory=list)  # requests that failed (a missing file, say)
    errors: list[str] = field(default_factory=list)  # uncaught script errors

    def goto(self, path: Path) -> None:
        self.page.goto(Path(path).resolve().as_uri())
        self.page.wait_for_load_state("load")

    def shot(self, selector: str):
        from PIL import Image

        return Image.open(io.BytesIO(self.page.locator(selector).first.screenshot())).convert("RGB")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.fail("no Chromium on this machine: `make setup` installs it (apt package chromium)")
    return exe


@contextlib.contextmanager
def offline_browser(width: int = 1280, height: int = 900) -> Iterator[OfflinePage]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            view = OfflinePage(page=None)

            def only_files(route):
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    view.external.append(route.request.url)
                    route.abort()

            context.route("**/*", only_files)
            view.page = context.new_page()
            view.page.on("requestfailed", lambda request: view.failed.append(request.url))
            view.page.on("pageerror", lambda error: view.errors.append(str(error)))
            yield view
        finally:
            browser.close()


def share_of(image, rgb: tuple[int, int, int], tolerance: int = 12) -> float:
    """The share of ``image``'s pixels within ``tolerance`` of colour ``rgb`` (per channel)."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.int16).reshape(-1, 3)
    near = (np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tolerance).all(axis=1)
    return float(near.mean()) if len(pixels) else 0.0
