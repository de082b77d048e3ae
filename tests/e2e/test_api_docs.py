"""/docs (Swagger UI) and /redoc (ReDoc) in real headless Chromium with every request to a
host other than 127.0.0.1 blocked: the pages render the API's operations from assets the
server ships, and never try to reach a CDN."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gristmill.demo.process import ServerProcess, free_port
from tests.conftest import PACKS
from tests.e2e.test_dashboard import ARGS, CHROMIUM

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("apidocs") / "data"
    data.mkdir()
    proc = ServerProcess(data, free_port(), packs_dir=PACKS)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


def _offline_page(browser: object, blocked: list[str]) -> object:
    page = browser.new_page()  # type: ignore[attr-defined]

    def only_local(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()  # type: ignore[attr-defined]
        else:
            blocked.append(url)
            route.abort()  # type: ignore[attr-defined]

    page.route("**/*", only_local)
    return page


def test_docs_and_redoc_render_offline(server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = _offline_page(browser, blocked)
            page.goto(f"{server.url}/docs")  # type: ignore[attr-defined]
            page.wait_for_selector(".opblock", timeout=30_000)  # type: ignore[attr-defined]
            paths = page.locator(".opblock-summary-path").all_text_contents()  # type: ignore[attr-defined]
            assert "/v1/events" in paths and "/v1/batch" in paths, paths
            assert "/metrics" in paths and "/com.snowplowanalytics.snowplow/tp2" in paths
            assert len(paths) > 20

            page = _offline_page(browser, blocked)
            page.goto(f"{server.url}/redoc")  # type: ignore[attr-defined]
            page.wait_for_selector("[data-section-id]", timeout=30_000)  # type: ignore[attr-defined]
            text = page.inner_text("body")  # type: ignore[attr-defined]
            assert "Native events" in text and "Segment / RudderStack" in text
        finally:
            browser.close()
    assert blocked == [], blocked
