"""Opening an HTML page (an analysis report) in headless Chromium, as a reader would.

`check_page` loads a local page through playwright and reports what a reader would notice: console
errors, script errors, failed or external requests, images that did not load, and the headings;
it saves a full-page screenshot. Tests that use it carry `requires_browser`, which skips them
(a failure in CI) where Debian's chromium or the playwright package is missing.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None

requires_browser = pytest.mark.skipif(
    CHROMIUM is None or not HAVE_PLAYWRIGHT,
    reason="the browser check needs Debian's chromium (apt-get install chromium; found: "
    f"{CHROMIUM}) and the playwright package (pip install -e '.[test]'; importable: "
    f"{HAVE_PLAYWRIGHT}); no browser is downloaded")

IMAGES_STATE = """() => Array.from(document.images).map(img => ({
  src: img.getAttribute("src"), complete: img.complete, naturalWidth: img.naturalWidth}))"""


def check_page(html_path: str | Path, screenshot_path: str | Path,
               executable_path: str | None = None, timeout_ms: int = 10_000) -> dict:
  """Loads `html_path` in headless Chromium and screenshots the whole page to `screenshot_path`.

  Returns {"title": str, "headings": [h1/h2/h3 texts], "images": number of <img>,
  "broken_images": [src of each image not loaded], "errors": [console errors, page errors,
  failed requests and requests that leave the machine], "screenshot": Path}.
  """
  from playwright.sync_api import sync_playwright  # pylint: disable=import-outside-toplevel

  html_path, screenshot_path = Path(html_path).resolve(), Path(screenshot_path)
  errors = []
  with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=executable_path or CHROMIUM, headless=True,
                                args=["--no-sandbox"])  # tests run as root
    try:
      page = browser.new_page(viewport={"width": 1280, "height": 900})
      page.on("console", lambda m: errors.append(f"console: {m.text}")
              if m.type == "error" else None)
      page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
      page.on("requestfailed", lambda r: errors.append(
          f"request failed: {r.url} ({r.failure})"))
      page.on("request", lambda r: errors.append(f"external request: {r.url}")
              if not r.url.startswith(("file:", "data:", "about:")) else None)
      page.goto(html_path.as_uri(), wait_until="load", timeout=timeout_ms)
      page.wait_for_function("() => Array.from(document.images).every(img => img.complete)",
                             timeout=timeout_ms)
      images = page.evaluate(IMAGES_STATE)
      headings = [text.strip() for text in page.locator("h1, h2, h3").all_inner_texts()]
      title = page.title()
      screenshot_path.parent.mkdir(parents=True, exist_ok=True)
      page.screenshot(path=str(screenshot_path), full_page=True)
    finally:
      browser.close()
  return {"title": title, "headings": headings, "images": len(images),
          "broken_images": [img["src"] for img in images
                            if not (img["complete"] and img["naturalWidth"] > 0)],
          "errors": errors, "screenshot": screenshot_path}
