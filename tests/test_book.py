"""The book builds strictly and offline; in headless Chromium its math is typeset, its
figures load and nothing is requested from the network."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.foundation


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_mkdocs_build_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "foundations.html").is_file()  # page.html links: the book works from disk


def test_every_written_chapter_is_in_the_nav_and_the_stage_map(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    chapters = sorted(p.parent.name for p in (ROOT / "docs" / "stages").glob("stage-*/index.md"))
    for name in chapters:
        assert (site / "stages" / name / "index.html").is_file()
        assert f'href="stages/{name}/index.html"' in index, f"{name} missing from the stage map or nav"
    assert index.count("in preparation") == 18 - len(chapters)


def test_built_site_references_nothing_on_the_network(site):
    external = re.compile(r"""<(?:script|link|img|iframe|source)\b[^>]*?(?:src|href)=["']?(https?:)?//""", re.I)
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        m = external.search(text)
        assert m is None, f"{html.relative_to(site)} loads {text[m.start():m.start() + 160]}"
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), f"{css} loads a remote url()"


def test_every_chapter_figure_exists(site):
    for html in site.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+)"', html.read_text(encoding="utf-8")):
            if src.startswith(("data:", "http")):
                continue
            assert (html.parent / src).resolve().is_file(), f"{html}: missing image {src}"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.browser
@pytest.mark.slow
def test_browser_shows_typeset_math_and_figures(site):
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    shots = Path(os.environ.get("SPIRAL_ARTIFACTS", ROOT / "artifacts"))
    shots.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            pages = ["foundations.html"] + sorted(
                f"stages/{d.name}/index.html" for d in (site / "stages").glob("stage-*")
                if d.is_dir()
            ) if (site / "stages").is_dir() else ["foundations.html"]
            for rel in pages:
                page.goto(f"{base}/{rel}", wait_until="networkidle")
                # KaTeX typesets after the network is idle, hundreds of formulas per page:
                # seconds on a loaded machine. Wait for it (or time out and report the count).
                try:
                    page.wait_for_function(
                        "document.querySelectorAll('.arithmatex').length === "
                        "document.querySelectorAll('.arithmatex .katex').length",
                        timeout=60_000)
                except sync_api.TimeoutError:
                    pass
                n_math = page.locator(".arithmatex").count()
                n_katex = page.locator(".arithmatex .katex").count()
                assert n_math > 0 and n_katex == n_math, f"{rel}: {n_katex}/{n_math} typeset"
                assert page.locator(".katex-error, .math-error").count() == 0, f"{rel}: TeX error"
                body = page.inner_text("article")
                leftover = re.findall(r"(?<![\w$\\])\$[^$\s][^$\n]{0,60}\$", body)
                assert not leftover, f"{rel}: literal math left: {leftover[:3]}"
                # lazy images below the fold: load them all, then check each decoded
                page.evaluate(
                    "Promise.all(Array.from(document.images).map(i => {"
                    "i.loading = 'eager'; return i.decode().catch(() => null); }))"
                )
                broken = page.evaluate(
                    "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                    ".map(i => i.src)"
                )
                assert not broken, f"{rel}: images failed to load: {broken}"
                name = rel.removesuffix("/index.html").removesuffix(".html").replace("/", "_")
                display = page.locator(".katex-display")
                if display.count():
                    display.first.evaluate("e => e.scrollIntoView({block: 'center'})")
                page.screenshot(path=str(shots / f"book-{name}.png"), full_page=False)
            browser.close()
    finally:
        server.shutdown()
    foreign = [u for u in requests if not u.startswith(base) and not u.startswith("data:")]
    assert not foreign, f"the book requested the network: {foreign[:5]}"


@pytest.mark.browser
@pytest.mark.slow
def test_book_opened_from_disk_navigates_and_searches(site):
    """``site/index.html`` opened as a file: links lead to pages (not folder listings) and the
    search box finds a chapter (Material's offline plugin bundles the index)."""
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto((site / "index.html").as_uri())
        hrefs = page.evaluate("Array.from(document.querySelectorAll('nav a[href]'))"
                              ".map(a => a.getAttribute('href'))")
        local = [h for h in hrefs if h and not h.startswith(("http", "#"))]
        assert local and all(h.split("#")[0].endswith(".html") for h in local), local[:10]
        # the search box is shown at this width; it stays hidden if the worker cannot start
        page.fill("input.md-search__input", "Kneser")
        page.wait_for_selector(".md-search-result__item", timeout=15000)
        assert page.locator(".md-search-result__item").count() > 0
        browser.close()
