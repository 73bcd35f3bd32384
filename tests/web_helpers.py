"""Dashboard test harness: a real `shipyard up` with traffic in its store, and headless Chromium
(Playwright's sync API, the system's /usr/bin/chromium) that fails the test on any console error,
page error, failed request or HTTP error status.

Use from a test module::

    from tests import web_helpers
    from tests.web_helpers import Dashboard

    browser, dashboard = web_helpers.browser, web_helpers.dashboard

    def test_my_page(dashboard):
        with dashboard.page() as page:
            page.goto("/my-page")
            page.expect_text("My page")
            page.expect_charts()
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ShipyardServer

CHROMIUM = os.environ.get("SHIPYARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Two routes on the mock provider: `default` always answers, `flaky` fails a third of its calls
# (no fallback), so the overview has errors to show. Two models, priced, so cost is not zero.
CONFIG = """
providers:
  - {name: fake, type: mock, latency_ms: 15, tokens_per_s: 400}
  - {name: shaky, type: mock, latency_ms: 40, error_rate: 0.34, seed: 7}
models:
  - {name: fake-chat, provider: fake, pricing: {input_per_mtok: 3, output_per_mtok: 15}}
  - {name: shaky-chat, provider: shaky, pricing: {input_per_mtok: 1, output_per_mtok: 2}}
routes:
  - {name: default, targets: [{model: fake-chat}]}
  - {name: flaky, targets: [{model: shaky-chat}]}
"""

QUESTIONS = [
    "Where is the nearest harbour with a crane for containers?",
    "Summarise the cargo manifest for the morning tide",
    "Which ropes should sailors check before a storm?",
    "Translate 'open water beyond the cape' into French",
    "How long does the tea cargo take to unload?",
]


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright (python) is not installed: pip install playwright (dev extra)")
    return CHROMIUM


def wait_for_traces(server: ShipyardServer, n: int, timeout: float = 15.0) -> None:
    """Until the batch writer stored at least ``n`` traces."""
    engine = sa.create_engine(server.store_url())
    try:
        deadline = time.monotonic() + timeout
        while True:
            with engine.connect() as conn:
                have = conn.execute(sa.text("SELECT count(*) FROM traces")).scalar() or 0
            if have >= n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"only {have} of {n} traces were written within {timeout}s")
            time.sleep(0.05)
    finally:
        engine.dispose()


@dataclass
class Traffic:
    sent: int = 0
    trace_ids: list[str] = field(default_factory=list)  # of the answered requests, oldest first
    errors: int = 0  # failed requests (stored as traces too, their ids not in trace_ids)
    by_route: dict[str, int] = field(default_factory=dict)


def send_traffic(server: ShipyardServer, n: int = 24) -> Traffic:
    """Requests through the official openai client: chat and streamed chat on `default`, chat on
    `flaky` (some fail), tags and users on some."""
    import openai

    client = server.openai()
    out = Traffic()
    for i in range(n):
        route = "flaky" if i % 3 == 2 else "default"
        messages = [
            {"role": "system", "content": "You are a harbour assistant. Be brief."},
            {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" (#{i})"},
        ]
        headers = {"X-Shipyard-Tags": "beta" if i % 2 else "eu, beta"} if i % 4 != 3 else {}
        out.sent += 1
        out.by_route[route] = out.by_route.get(route, 0) + 1
        try:
            if i % 5 == 4:
                raw_stream = client.chat.completions.with_raw_response.create(
                    model=route, messages=messages, stream=True, user=f"user-{i % 3}", extra_headers=headers
                )
                out.trace_ids.append(raw_stream.headers["x-shipyard-trace-id"])
                for _ in raw_stream.parse():
                    pass
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model=route, messages=messages, max_tokens=12, user=f"user-{i % 3}", extra_headers=headers
                )
                out.trace_ids.append(raw.headers["x-shipyard-trace-id"])
        except openai.APIStatusError:
            out.errors += 1
    return out


def add_scores(
    server: ShipyardServer, trace_ids: list[str], name: str = "relevance", route: str | None = None
) -> None:
    """Online-eval scores for some traces (of ``route`` only, if given), as online evals store them."""
    engine = sa.create_engine(server.store_url())
    try:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.text("SELECT trace_id, start_time, route FROM traces WHERE trace_id IN :ids").bindparams(
                    sa.bindparam("ids", expanding=True)
                ),
                {"ids": trace_ids},
            ).all()
            rows = [r for r in rows if route is None or r[2] == route]
            for k, (tid, start, route_) in enumerate(rows):
                score = 0.55 + 0.4 * ((k * 37) % 10) / 10
                conn.execute(
                    sa.text(
                        "INSERT INTO trace_scores (trace_id, name, score, passed, detail, source, route, "
                        "trace_time, created_at) VALUES (:t, :n, :s, :p, :d, 'online', :r, :tt, :c)"
                    ),
                    {
                        "t": tid,
                        "n": name,
                        "s": score,
                        "p": score >= 0.7,
                        "d": '{"reason": "keyword overlap"}',
                        "r": route_,
                        "tt": start,
                        "c": time.time(),
                    },
                )
    finally:
        engine.dispose()


# -- the browser --------------------------------------------------------------------------------------
class PageProblems(AssertionError):
    pass


class DashboardPage:
    """A Playwright page bound to one server that records every problem the browser reports."""

    def __init__(self, raw: Any, base_url: str, shots: Path) -> None:
        self.raw = raw
        self.base_url = base_url
        self.shots = shots
        self.problems: list[str] = []
        self.allowed_statuses: set[int] = set()
        raw.on("console", self._on_console)
        raw.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        raw.on("requestfailed", self._on_failed)
        raw.on("response", self._on_response)

    def _on_console(self, msg: Any) -> None:
        expected = any(f"status of {code} " in msg.text for code in self.allowed_statuses)
        if msg.type in ("error", "assert") and not expected:
            self.problems.append(f"console {msg.type}: {msg.text} ({msg.location.get('url', '')})")

    def _on_failed(self, request: Any) -> None:
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _on_response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.allowed_statuses:
            self.problems.append(f"HTTP {response.status} for {response.request.method} {response.url}")

    def goto(self, path: str, status: int = 200) -> Any:
        """Open ``path`` and wait until the page and all its charts are drawn."""
        if status >= 400:
            self.allowed_statuses.add(status)
        response = self.raw.goto(self.base_url + path, wait_until="load")
        assert response is not None and response.status == status, (
            f"GET {path}: HTTP {response.status if response else '?'} (wanted {status})"
        )
        self.wait_ready()
        return response

    def wait_ready(self) -> None:
        self.raw.wait_for_function("document.documentElement.dataset.chartsReady === '1'", timeout=20_000)

    def expect_text(self, *texts: str) -> None:
        # As rendered (hidden elements excluded); case-blind because CSS may upper-case labels.
        body = " ".join(self.raw.inner_text("body").split()).casefold()
        for text in texts:
            assert " ".join(text.split()).casefold() in body, f"{text!r} not on {self.raw.url}"

    def charts(self) -> list[Any]:
        return self.raw.query_selector_all("[data-chart]")

    def expect_charts(self, minimum: int = 1) -> int:
        """Every chart on the page is an SVG Plotly drew with data in it, and its screenshot is
        not blank. Returns how many charts were checked."""
        charts = self.charts()
        assert len(charts) >= minimum, f"{len(charts)} chart(s) on {self.raw.url}; wanted at least {minimum}"
        for el in charts:
            name = el.get_attribute("id")
            assert el.get_attribute("data-rendered") == "1", f"chart {name} was not rendered"
            n_paths = el.evaluate(
                "e => e.querySelectorAll('svg.main-svg .plot path, svg.main-svg .barlayer path, "
                "svg.main-svg .scatterlayer path').length"
            )
            assert n_paths > 0, f"chart {name} has no data paths"
            png = el.screenshot()
            assert_not_blank(png, name or "chart")
        return len(charts)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.raw.screenshot(path=str(path), full_page=True)
        return path

    def check(self) -> None:
        if self.problems:
            raise PageProblems("the browser reported problems:\n" + "\n".join(self.problems))


def assert_not_blank(png: bytes, name: str) -> None:
    """A drawn chart has many colours and a good share of non-background pixels."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.resize((max(1, img.width // 2), max(1, img.height // 2)))
    flat = getattr(small, "get_flattened_data", None) or small.getdata  # Pillow 12 renamed it
    pixels = list(flat())
    background = max(set(pixels), key=pixels.count)
    inked = sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, background, strict=True)) > 60)
    colours = len(set(pixels))
    assert colours >= 8 and inked / len(pixels) > 0.01, (
        f"chart {name} looks blank: {colours} colours, {inked / len(pixels):.2%} inked pixels"
    )


@dataclass
class Dashboard:
    server: ShipyardServer
    browser: Any
    shots: Path
    traffic: Traffic | None = None

    @contextlib.contextmanager
    def page(self, width: int = 1400, height: int = 1000) -> Iterator[DashboardPage]:
        # The dashboard needs a session: the admin key on every request stands in for a login.
        context = self.browser.new_context(
            viewport={"width": width, "height": height}, extra_http_headers=self.server.headers
        )
        try:
            page = DashboardPage(context.new_page(), self.server.url, self.shots)
            yield page
            page.check()
        finally:
            context.close()

    def api(self) -> httpx.Client:
        return self.server.api()


# Module scope, not session: Playwright's sync API runs an event loop on the main thread while it
# is started, which breaks every later test that calls asyncio.run() (and a second module's own
# Playwright). Each browser-test module starts Chromium once and stops it before the next module.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _start(tmp: Path, name: str) -> ShipyardServer:
    return ShipyardServer(tmp / name, CONFIG).start()


@pytest.fixture(scope="module")
def dashboard(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A server with traffic: 24 requests on two routes (some failed, some streamed, tagged),
    online-eval scores on half of the `default` route's. Shared by a module's tests: add, don't
    delete."""
    tmp = tmp_path_factory.mktemp("dashboard")
    server = _start(tmp, "home")
    try:
        traffic = send_traffic(server)
        wait_for_traces(server, traffic.sent)
        add_scores(server, traffic.trace_ids[::2], route="default")
        yield Dashboard(server, browser, tmp, traffic)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def empty_dashboard(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A server whose store has nothing in it yet."""
    tmp = tmp_path_factory.mktemp("empty-dashboard")
    server = _start(tmp, "home")
    try:
        yield Dashboard(server, browser, tmp)
    finally:
        server.stop()
