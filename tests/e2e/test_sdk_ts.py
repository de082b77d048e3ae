"""The generated TypeScript SDK in real headless Chromium (Debian's, driven by Playwright),
against a real ``gristmill serve`` child with the platform pack.

``gristmill sdk --lang ts --pack platform`` writes the client, esbuild bundles it (IIFE, global
``Gristmill``), and a page on the server's own origin (``/healthz``, so no CORS is involved)
loads the bundle and emits typed events. Checked on the server: every event lands exactly once —
plainly, after a forced 503 with ``Retry-After: 1`` (before the server and after it had already
stored the batch), across a reload with the queue in localStorage, and from the keepalive flush
when the page is left. ``tsc --noEmit`` rejects a call with a wrong property type.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore
from tests.conftest import PACKS, ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TSC = ROOT / "node_modules" / ".bin" / "tsc"
ESBUILD = ROOT / "node_modules" / ".bin" / "esbuild"


def need_node_tools() -> None:
    missing = [p.name for p in (TSC, ESBUILD) if not p.exists()]
    if not missing:
        return
    msg = f"{', '.join(missing)} not installed (run `make node_modules` or `npm ci`)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}; CI=true requires them")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def sdk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated client (through the CLI, as a user runs it) and its esbuild bundle."""
    need_node_tools()
    d = tmp_path_factory.mktemp("sdk_ts")
    out = d / "platform.ts"
    subprocess.run(
        [sys.executable, "-m", "gristmill", "sdk", "--lang=ts", "--pack=platform", f"--out={out}"],
        check=True,
        env={**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS)},
        cwd=d,
    )
    subprocess.run(
        [
            str(ESBUILD),
            "platform.ts",
            "--bundle",
            "--format=iife",
            "--global-name=Gristmill",
            "--outfile=platform.js",
            "--log-level=warning",
        ],
        check=True,
        cwd=d,
    )
    return d


@pytest.fixture(scope="module")
def bundle(sdk_dir: Path) -> str:
    return (sdk_dir / "platform.js").read_text()


class Server:
    def __init__(self, tmp: Path) -> None:
        data = tmp / "data"
        data.mkdir(parents=True)
        meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
        self.key = meta.create_key("write", "browser", pack="platform", source="web")[1]
        self.ops = meta.create_key("secret", "ops", role="operator")[1]
        meta.close()
        self.proc = ServerProcess(
            data, free_port(), packs_dir=PACKS, env={"GRISTMILL_PACKS": '["platform"]'}
        )
        self.url = self.proc.url

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.ops}"}, timeout=10)
        r.raise_for_status()
        return r.json()

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = self.get("/v1/pipeline/stats")["totals"]
        return totals

    def landed(self, ids: list[str], timeout: float = 30) -> Counter[str]:
        """How often each of ``ids`` is stored, once all are (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        wanted = set(ids)
        while True:
            rows = self.get("/v1/events?pack=platform&limit=1000&preset=90d")["events"]
            seen = Counter(e["event_id"] for e in rows if e["event_id"] in wanted)
            if (set(seen) == wanted and self.totals()["in_flight"] == 0) or (
                time.monotonic() > deadline
            ):
                return seen
            time.sleep(0.1)

    def rows(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = self.get("/v1/events?pack=platform&limit=1000&preset=90d")["events"]
        return {e["event_id"]: e for e in rows if e["event_id"] in set(ids)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sdk_dir: Path) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("sdk_ts_server"))
    s.proc.start()
    yield s
    s.proc.stop()


@pytest.fixture(scope="module")
def browser(sdk_dir: Path) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context()  # fresh localStorage per test
    p = ctx.new_page()
    p.on("console", lambda m: print(f"[console.{m.type}] {m.text}"))
    yield p
    ctx.close()


def open_page(page: Page, server: Server, bundle: str, **options: Any) -> None:
    """A page on the server's origin with the bundle loaded and ``window.gm`` a client."""
    if not page.url.startswith(server.url):
        page.goto(server.url + "/healthz")
    page.add_script_tag(content=bundle)
    opts = {"endpoint": server.url, "writeKey": server.key, **options}
    page.evaluate("o => { window.gm = Gristmill.createClient(o); }", opts)


EMIT_20 = """
() => {
  const ids = [];
  gm.identify("user-7");
  for (let i = 0; i < 4; i++) {
    ids.push(gm.trackProjectCreated(`p-${i}`, {
      title: "E-commerce Platform", budget: 5000 + i, project_type: "fixed",
      is_featured: i % 2 === 0, skills: ["React", "Node.js"],
    }));
    ids.push(gm.trackProposalSubmitted(`pr-${i}`, { project_id: `p-${i}`, bid_amount: 1200.5 }));
    ids.push(gm.trackProfileViewed(`dev-${i}`));
    ids.push(gm.trackSearchPerformed({
      query: "react developer", filters: { skills: ["React"], budget_min: 1000 },
      results_count: 15, search_time_ms: 350,
    }));
    ids.push(gm.trackUserLogin({ login_method: "github", mfa_used: true }));
  }
  return ids;
}
"""


def assert_once(counts: Counter[str], ids: list[str]) -> None:
    """Every id landed, none twice."""
    assert sorted(counts) == sorted(ids), counts
    assert set(counts.values()) == {1}, counts


def pick(stats: dict[str, int], *names: str) -> tuple[int, ...]:
    return tuple(stats[n] for n in names)


def flush(page: Page) -> dict[str, int]:
    stats: dict[str, int] = page.evaluate("async () => { await gm.flush(); return gm.stats; }")
    return stats


def test_twenty_typed_events_land_exactly_once(page: Page, server: Server, bundle: str) -> None:
    before = server.totals()
    open_page(page, server, bundle, batchSize=7, flushIntervalMs=60_000)
    ids: list[str] = page.evaluate(EMIT_20)
    assert len(ids) == len(set(ids)) == 20
    stats = flush(page)
    assert pick(stats, "sent", "failed", "retries") == (20, 0, 0)
    assert page.evaluate("gm.pending()") == 0

    counts = server.landed(ids)
    assert_once(counts, ids)
    after = server.totals()
    print("RELOAD", {k: after[k] - before[k] for k in after if isinstance(after[k], int)})
    assert after["received"] - before["received"] == 20
    assert after["duplicates"] == before["duplicates"]
    assert after["quarantined"] == before["quarantined"]

    rows = server.rows(ids)
    anon = page.evaluate("gm.getAnonymousId()")
    assert page.evaluate("localStorage.getItem('gristmill:platform:anonymous_id')") == anon
    session = page.evaluate("gm.getSessionId()")
    first = rows[ids[0]]
    assert first["event_type"] == "project.created"
    assert first["schema_version"] == 1
    assert first["properties"]["project_id"] == "p-0"
    assert first["properties"]["budget"] == 5000
    assert first["properties"]["skills"] == ["React", "Node.js"]
    assert first["context"]["page_url"] == server.url + "/healthz"
    assert "HeadlessChrome" in first["context"]["user_agent"] or first["context"]["user_agent"]
    assert first["context"]["locale"]
    assert {r["anonymous_id"] for r in rows.values()} == {anon}
    assert {r["session_id"] for r in rows.values()} == {session}
    assert {r["user_id"] for r in rows.values()} == {"user-7"}
    assert Counter(r["event_type"] for r in rows.values()) == {
        "project.created": 4,
        "proposal.submitted": 4,
        "profile.viewed": 4,
        "search.performed": 4,
        "user.login": 4,
    }


class Forced503:
    """Answers the first ``POST /v1/events`` with 503 + ``Retry-After: 1``; the rest go through.
    With ``reach_server`` the first request is delivered first and only its answer replaced,
    as when a proxy times out after the server stored the batch."""

    def __init__(self, reach_server: bool) -> None:
        self.reach_server = reach_server
        self.times: list[float] = []
        self.statuses: list[int] = []

    def __call__(self, route: Route) -> None:
        self.times.append(time.monotonic())
        if len(self.times) == 1:
            if self.reach_server:
                self.statuses.append(route.fetch().status)
            route.fulfill(
                status=503,
                headers={"Retry-After": "1", "Content-Type": "application/problem+json"},
                body='{"title":"Service Unavailable","status":503}',
            )
            return
        resp = route.fetch()
        self.statuses.append(resp.status)
        route.fulfill(response=resp)


@pytest.mark.parametrize("reach_server", [False, True], ids=["before-server", "after-stored"])
def test_forced_503_retry_after_lands_once(
    page: Page, server: Server, bundle: str, reach_server: bool
) -> None:
    forced = Forced503(reach_server)
    page.route("**/v1/events", forced)
    before = server.totals()
    open_page(page, server, bundle, batchSize=50, flushIntervalMs=60_000)
    ids: list[str] = page.evaluate(EMIT_20)
    stats = flush(page)

    assert pick(stats, "sent", "failed", "retries") == (20, 0, 1)
    assert len(forced.times) == 2, forced.times  # the 503, then one retry with the same batch
    waited = forced.times[1] - forced.times[0]
    assert waited >= 0.95, f"retried after {waited:.3f}s, before Retry-After: 1"
    assert waited < 5
    assert forced.statuses[-1] == 200

    counts = server.landed(ids)
    assert_once(counts, ids)
    after = server.totals()
    duplicates = after["duplicates"] - before["duplicates"]
    received = after["received"] - before["received"]
    # Before the server: it saw each event once. After it stored them: the retry re-sent the
    # same event ids, and dedupe counted all 20 as duplicates instead of loading them again.
    assert (received, duplicates) == ((40, 20) if reach_server else (20, 0))
    print(f"forced 503 {reach_server=}: sent 20, landed {sum(counts.values())}, dup {duplicates}")


def test_reload_keeps_the_queue(page: Page, server: Server, bundle: str) -> None:
    # No keepalive flush on the way out here: Playwright's routes do not see a keepalive request
    # that outlives its page, so it would reach the server (and the re-send after the reload be
    # counted as 20 duplicates). This test is about the stored queue alone.
    page.route("**/v1/events", lambda route: route.abort("connectionrefused"))
    open_page(
        page,
        server,
        bundle,
        batchSize=50,
        flushIntervalMs=60_000,
        retryBaseMs=60_000,
        flushOnHide=False,
    )
    ids: list[str] = page.evaluate(EMIT_20)
    anon = page.evaluate("gm.getAnonymousId()")
    page.evaluate("() => { void gm.flush(); }")  # first try fails; the retry waits a minute
    page.wait_for_function("gm.stats.retries >= 1")
    stored = page.evaluate("JSON.parse(localStorage.getItem('gristmill:platform:queue')).length")
    assert stored == 20

    before = server.totals()
    page.reload()
    page.unroute("**/v1/events")
    open_page(page, server, bundle, batchSize=50, flushIntervalMs=60_000)
    assert page.evaluate("gm.getAnonymousId()") == anon  # generated once, kept
    assert page.evaluate("gm.getUserId()") == "user-7"
    page.wait_for_function("gm.pending() === 0")
    counts = server.landed(ids)
    assert_once(counts, ids)
    assert page.evaluate("localStorage.getItem('gristmill:platform:queue')") is None
    after = server.totals()
    assert after["received"] - before["received"] == 20
    assert after["duplicates"] == before["duplicates"]


def test_leaving_the_page_flushes_with_keepalive(page: Page, server: Server, bundle: str) -> None:
    open_page(page, server, bundle, batchSize=100, flushIntervalMs=600_000)
    ids: list[str] = page.evaluate(
        "() => Array.from({length: 5}, (_, i) => gm.trackProjectViewed(`pv-${i}`))"
    )
    assert page.evaluate("gm.pending()") == 5  # nothing sent yet: batch and interval not reached
    before = server.totals()
    page.goto(server.url + "/readyz")  # pagehide: the keepalive request outlives the page
    counts = server.landed(ids)
    assert_once(counts, ids)
    after = server.totals()
    # visibilitychange and pagehide both fire on the way out: still one request's worth.
    assert after["received"] - before["received"] == 5
    assert after["duplicates"] == before["duplicates"]


def test_hidden_tab_flushes_with_keepalive(page: Page, server: Server, bundle: str) -> None:
    open_page(page, server, bundle, batchSize=100, flushIntervalMs=600_000)
    ids: list[str] = page.evaluate(
        "() => Array.from({length: 3}, (_, i) => gm.trackNotificationClicked(`n-${i}`))"
    )
    page.evaluate(
        """() => {
        Object.defineProperty(document, "visibilityState", {value: "hidden", configurable: true});
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    )
    page.wait_for_function("gm.pending() === 0")  # the tab lives on: the answer arrives
    stats = page.evaluate("gm.stats")
    assert pick(stats, "sent", "keepaliveRequests") == (3, 1)
    counts = server.landed(ids)
    assert_once(counts, ids)


def test_session_rotates_after_idle(page: Page, server: Server, bundle: str) -> None:
    open_page(page, server, bundle, sessionTimeoutMs=300, flushIntervalMs=60_000)
    first = page.evaluate("() => { gm.trackUserLogout(); return gm.getSessionId(); }")
    assert page.evaluate("() => { gm.trackUserLogout(); return gm.getSessionId(); }") == first
    page.wait_for_timeout(500)
    second = page.evaluate("() => { gm.trackUserLogout(); return gm.getSessionId(); }")
    assert second != first
    anon = page.evaluate("gm.getAnonymousId()")
    page.evaluate("gm.reset()")
    assert page.evaluate("gm.getAnonymousId()") != anon
    assert page.evaluate("gm.getUserId()") is None
    flush(page)


def tsc(sdk_dir: Path, name: str, body: str) -> subprocess.CompletedProcess[str]:
    (sdk_dir / name).write_text('import { PlatformClient } from "./platform";\n' + body)
    return subprocess.run(
        [str(TSC), "--noEmit", "--strict", name],
        cwd=sdk_dir,
        capture_output=True,
        text=True,
        check=False,
    )


GOOD = """
const gm = new PlatformClient({ writeKey: "gmw_x", endpoint: "https://collect.example" });
gm.trackProjectCreated("p-1", { title: "E-commerce Platform", budget: 5000, skills: ["React"] });
gm.trackProposalSubmitted("pr-1", { project_id: "p-1", bid_amount: 1200 });
gm.trackProfileViewed("dev-1");
"""


def test_tsc_rejects_a_wrong_property_type(sdk_dir: Path) -> None:
    good = tsc(sdk_dir, "good.ts", GOOD)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = tsc(sdk_dir, "bad.ts", GOOD + 'gm.trackProjectCreated("p-2", { budget: "5000" });\n')
    assert bad.returncode != 0
    line = GOOD.count("\n") + 2  # the import, GOOD, then the bad call
    assert f"bad.ts({line}," in bad.stdout, bad.stdout
    assert "error TS2322" in bad.stdout
    assert "not assignable to type 'number'" in bad.stdout
    missing = tsc(sdk_dir, "missing.ts", GOOD + 'gm.trackMilestoneApproved("m-1", {});\n')
    assert missing.returncode != 0
    assert f"missing.ts({line}," in missing.stdout, missing.stdout
    assert "amount" in missing.stdout
