"""/docs (Swagger UI) and /redoc (ReDoc) in real headless Chromium with every request to a
host other than 127.0.0.1 blocked: the pages render the API's operations from assets the
server ships, and never try to reach a CDN."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
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


def _offline_page(browser: Any, blocked: list[str]) -> Any:
    page = browser.new_page()

    def only_local(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_local)
    return page


def test_docs_and_redoc_render_offline(server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    blocked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = _offline_page(browser, blocked)
            page.goto(f"{server.url}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_text_contents()
            assert "/v1/events" in paths, paths
            assert "/v1/batch" in paths
            assert "/metrics" in paths
            assert "/com.snowplowanalytics.snowplow/tp2" in paths
            assert len(paths) > 20

            page = _offline_page(browser, blocked)
            page.goto(f"{server.url}/redoc")
            page.wait_for_selector("[data-section-id]", timeout=30_000)
            text = page.inner_text("body")
            assert "Native events" in text
            assert "Segment / RudderStack" in text
        finally:
            browser.close()
    assert blocked == [], blocked
