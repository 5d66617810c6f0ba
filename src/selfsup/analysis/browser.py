"""Open an HTML page in headless Chromium and say whether it renders: console errors, page
errors (uncaught exceptions), images that did not decode, and a full-page screenshot.

Driven by playwright (``pip install 'selfsup[dev]'``) with the system's Chromium (Debian's
``chromium`` package: ``apt-get install chromium``), so nothing is downloaded; the environment
variable ``SELFSUP_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from selfsup.atomic import write_atomic
from selfsup.errors import SelfsupError

CHROMIUM_ENV = "SELFSUP_CHROMIUM"
SCREENSHOT_MAX_BYTES = 1_000_000  # a screenshot above this is stored with a 256-colour palette

# every <img>: its alt text (or the start of its src), whether it loaded and its decoded width
IMAGES_JS = """() => Array.from(document.images).map(img => ({
    name: img.alt || img.src.slice(0, 60), complete: img.complete, width: img.naturalWidth}))"""


@dataclass
class PageCheck:
    """What the browser saw: ``console_errors`` (console messages of type error),
    ``page_errors`` (uncaught exceptions), the ``images`` count and the ``broken_images``
    (names of those with no decoded pixels), and the screenshot path, if one was taken."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.console_errors or self.page_errors or self.broken_images)

    def problems(self) -> list[str]:
        return [
            *(f"console error: {m}" for m in self.console_errors),
            *(f"page error: {m}" for m in self.page_errors),
            *(f"image not decoded: {m}" for m in self.broken_images),
        ]


def chromium_path() -> Path:
    """The Chromium executable: ``$SELFSUP_CHROMIUM``, else ``chromium`` on the PATH; a clear
    error saying how to install it when there is none."""
    given = os.environ.get(CHROMIUM_ENV)
    if given:
        if not Path(given).is_file():
            raise SelfsupError(f"{CHROMIUM_ENV}={given} is not a file; point it at Chromium")
        return Path(given)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SelfsupError(
            "headless Chromium not found: install it (`apt-get install chromium`, or `make "
            f"setup` as root) or set {CHROMIUM_ENV}=/path/to/chromium"
        )
    return Path(found)


def check_page(
    page_file: str | Path, *, screenshot: str | Path | None = None, width: int = 1000
) -> PageCheck:
    """Open ``page_file`` (file:// URL) in headless Chromium, ``width`` CSS pixels wide;
    collect console and page errors, check that every ``<img>`` decoded (``naturalWidth > 0``
    once the load event has fired) and, with ``screenshot``, save a full-page PNG there."""
    if importlib.util.find_spec("playwright") is None:
        raise SelfsupError("the browser check needs playwright: pip install 'selfsup[dev]'")
    from playwright.sync_api import sync_playwright  # optional dependency, checked above

    executable = chromium_path()
    check = PageCheck()
    url = Path(page_file).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(executable), headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.on(
                "console",
                lambda m: check.console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: check.page_errors.append(str(e)))
            page.goto(url, wait_until="load")
            images = page.evaluate(IMAGES_JS)
            check.images = len(images)
            check.broken_images = [i["name"] for i in images if not i["complete"] or not i["width"]]
            if screenshot is not None:
                check.screenshot = save_screenshot(page.screenshot(full_page=True), screenshot)
        finally:
            browser.close()
    return check


def save_screenshot(png: bytes, path: str | Path, max_bytes: int = SCREENSHOT_MAX_BYTES) -> Path:
    """Write the PNG atomically; one larger than ``max_bytes`` is stored with an adaptive
    256-colour palette (plots and text lose nothing visible), so it can be committed."""
    if len(png) > max_bytes:
        from PIL import Image  # (here: `selfsup report --help` reads this module's names)

        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
    write_atomic(path, lambda f: f.write(png))
    return Path(path)
