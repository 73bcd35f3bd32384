"""The dashboard's monitoring pages (overview, traces, one trace) in real headless Chromium against a
real `shipyard up`: with traffic and with an empty store, no console errors, failed requests or
HTTP errors, charts drawn (SVG paths and a screenshot that is not blank), filters, keyset pages
and the feedback buttons end to end."""

from __future__ import annotations

import httpx

from tests import web_helpers
from tests.web_helpers import Dashboard

# The shared fixtures (a server with traffic, an empty one, Chromium).
browser, dashboard, empty_dashboard = web_helpers.browser, web_helpers.dashboard, web_helpers.empty_dashboard


def test_overview_with_traffic(dashboard: Dashboard) -> None:
    traffic = dashboard.traffic
    assert traffic is not None
    with dashboard.page() as page:
        page.goto("/")
        page.expect_text("Overview", "Last hour", "Requests", "Error rate", "Latency p95", "TTFT p50", "Cost")
        kpi = page.raw.locator(".kpi", has_text="Requests").first.locator(".kpi-value").inner_text()
        assert kpi == str(traffic.sent)
        # Requests and errors, latency, TTFT, tokens, cost, online-eval scores.
        assert page.expect_charts(6) == 6
        page.expect_text("Online evaluation scores", "relevance", "Per route", "Per model", "shaky-chat")
        route_rows = page.raw.locator("section:has(h2:text('Per route')) tbody tr")
        assert route_rows.count() == 2
        page.screenshot("overview")

        # Filter by route from the menu; the page reloads with only that route.
        page.raw.select_option("select[name=route]", "flaky")
        page.raw.wait_for_url("**route=flaky**")
        page.wait_ready()
        kpi = page.raw.locator(".kpi", has_text="Requests").first.locator(".kpi-value").inner_text()
        assert kpi == str(traffic.by_route["flaky"])
        assert route_rows.count() == 1
        assert page.expect_charts(5) == 5  # no online-eval scores on this route

        # Another preset range keeps the filter.
        page.raw.select_option("select[name=range]", "24h")
        page.raw.wait_for_url("**range=24h**")
        page.wait_ready()
        assert "route=flaky" in page.raw.url
        page.expect_text("Last 24 hours")
        page.expect_charts(5)


def test_overview_custom_range_and_empty_window(dashboard: Dashboard) -> None:
    with dashboard.page() as page:
        page.goto("/")
        page.raw.select_option("select[name=range]", "custom")
        page.raw.fill("input[data-local=since]", "2020-01-01T00:00")
        page.raw.fill("input[data-local=until]", "2020-01-02T00:00")
        page.raw.click("[data-custom-range] button[type=submit]")
        page.raw.wait_for_url("**since=**")
        page.wait_ready()
        page.expect_text("No requests in this time range", "Show the last 30 days")
        assert page.charts() == []
        page.screenshot("overview-empty-window")


def test_overview_bad_range_is_an_error_page(dashboard: Dashboard) -> None:
    with dashboard.page() as page:
        page.goto("/?range=fortnight", status=400)
        page.expect_text("`range` must be one of 15m, 1h")


def test_traces_list_filters_and_pages(dashboard: Dashboard) -> None:
    traffic = dashboard.traffic
    assert traffic is not None
    with dashboard.page() as page:
        page.goto("/traces")
        page.expect_text("Traces", "Time", "Route", "Model", "Status", "Latency", "TTFT", "Feedback", "Input")
        rows = page.raw.locator("table.traces tbody tr")
        assert rows.count() == traffic.sent
        page.expect_text("Which ropes should sailors check")  # the first words of the input
        page.screenshot("traces")

        page.raw.select_option("select[name=status]", "error")
        page.raw.wait_for_url("**status=error**")
        page.wait_ready()
        assert rows.count() == traffic.errors
        assert page.raw.locator("table.traces .badge-error").count() == traffic.errors

        page.goto("/traces")
        page.raw.fill("input[name=q]", "nearest harbour")
        page.raw.click("form.filters button[type=submit]")
        page.raw.wait_for_url("**q=nearest**")
        page.wait_ready()
        assert 0 < rows.count() < traffic.sent
        for text in rows.locator("td.preview").all_inner_texts():
            assert "nearest harbour" in text.lower()

        page.goto("/traces?tag=nope-not-a-tag")
        page.expect_text("No traces match these filters")

        # Keyset pages: 10 per page, older, older, then newer brings back the same rows.
        page.goto("/traces?limit=10")
        first = rows.locator("td:first-child a").evaluate_all("els => els.map(e => e.title)")
        page.raw.click("a[rel=next]")
        page.wait_ready()
        second = rows.locator("td:first-child a").evaluate_all("els => els.map(e => e.title)")
        assert len(first) == len(second) == 10 and not set(first) & set(second)
        page.raw.click("a[rel=prev]")
        page.wait_ready()
        again = rows.locator("td:first-child a").evaluate_all("els => els.map(e => e.title)")
        assert again == first


def test_trace_page_and_feedback_buttons(dashboard: Dashboard) -> None:
    traffic = dashboard.traffic
    assert traffic is not None
    tid = traffic.trace_ids[-1]
    with dashboard.page() as page:
        page.goto("/traces")
        page.raw.locator(f"tr[data-href='/traces/{tid}'] td.preview").click()
        page.raw.wait_for_url(f"**/traces/{tid}")
        page.wait_ready()
        page.expect_text("Spans", "Input", "Output", "Served by", "Feedback", "Scores", "Guard findings")
        page.expect_text("system", "You are a harbour assistant", "assistant", tid)
        assert page.expect_charts(1) == 1
        spans = httpx.get(
            f"{dashboard.server.url}/api/traces/{tid}", headers=dashboard.server.headers
        ).json()["spans"]
        assert page.raw.locator("#chart-waterfall .barlayer path").count() == len(spans) >= 2
        page.screenshot("trace")

        # Thumbs down with a comment, sent from the page, stored through the API.
        submit = page.raw.locator("[data-feedback-submit]")
        assert submit.is_disabled()
        page.raw.click("button[data-score=down]")
        page.raw.fill("textarea[name=comment]", "Wrong harbour <b>not bold</b>")
        submit.click()
        page.raw.wait_for_selector("text=Thanks — saved.")
        item = page.raw.locator("[data-feedback-list] li").first
        assert "Wrong harbour <b>not bold</b>" in item.inner_text()  # text, never HTML
        assert item.locator("svg.fb-down").count() == 1
        stored = dashboard.api().get("/feedback", params={"trace_id": tid}).json()["data"]
        assert [(f["kind"], f["score"], f["comment"]) for f in stored] == [
            ("thumbs", 0.0, "Wrong harbour <b>not bold</b>")
        ]

        # After a reload it is rendered by the server, and the trace list shows and filters it.
        page.goto(f"/traces/{tid}")
        page.expect_text("Wrong harbour <b>not bold</b>")
        page.raw.click("button[data-score=up]")
        page.raw.click("[data-feedback-submit]")
        page.raw.wait_for_selector("text=Thanks — saved.")
        assert page.raw.locator("[data-feedback-list] li").count() == 2
        page.goto("/traces?feedback=negative")
        assert page.raw.locator("table.traces tbody tr").count() == 1
        cell = page.raw.locator(f"tr[data-href='/traces/{tid}'] td:nth-child(9)")
        assert cell.locator("span.fb-up").inner_text().strip() == "1"
        assert cell.locator("span.fb-down").inner_text().strip() == "1"
        assert cell.locator("[title='1 comment(s)']").count() == 1
        assert cell.locator("span.fb-down svg").count() == cell.locator("span.fb-up svg").count() == 1


def test_failed_trace_and_unknown_trace(dashboard: Dashboard) -> None:
    with dashboard.page() as page:
        page.goto("/traces?status=error")
        page.raw.locator("table.traces tbody tr td.preview").first.click()
        page.raw.wait_for_url("**/traces/*")
        page.wait_ready()
        page.expect_text("Error 502", "No answer: the request failed.")
        page.expect_charts(1)
        page.goto("/traces/0123456789abcdef0123456789abcdef", status=404)
        page.expect_text("Not found", "does not exist")
        page.goto("/no-such-page", status=404)
        page.expect_text("Page not found", "no page at /no-such-page")


def test_pages_with_an_empty_store(empty_dashboard: Dashboard) -> None:
    with empty_dashboard.page() as page:
        page.goto("/")
        page.expect_text("No traces yet — send a request", "curl", "/v1/chat/completions")
        assert page.charts() == []
        page.screenshot("overview-empty")
        page.goto("/?range=7d&route=nothing")
        page.expect_text("No traces yet")
        page.goto("/traces")
        page.expect_text("No traces yet — send a request", "curl")
        page.goto("/traces?status=error&q=anything&feedback=positive&tag=x&range=15m")
        page.expect_text("No traces yet")
        page.screenshot("traces-empty")


def test_static_assets_are_local_and_cached(dashboard: Dashboard) -> None:
    """Plotly comes from the installed package, versioned URLs are cached for a year, and the
    page loads nothing from any other host."""
    with dashboard.page() as page:
        hosts: set[str] = set()
        page.raw.on("request", lambda r: hosts.add(httpx.URL(r.url).host))
        page.goto("/")
        assert hosts == {"127.0.0.1"}
    html = httpx.get(dashboard.server.url + "/", headers=dashboard.server.headers).text
    assert "cdn" not in html.lower()
    r = httpx.get(dashboard.server.url + "/static/vendor/plotly.min.js?v=1")
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert r.headers["content-type"].startswith("text/javascript") and len(r.content) > 1_000_000
