"""Attacks on the dashboard's origin, in real Chromium where a browser is what makes them work: a
developer's uploaded HTML/SVG opened by an admin, a same-site page forging changes with the admin's
session cookie, forged and ended session cookies, text that is not text."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests import web_helpers
from tests.conftest import ThreadServer
from tests.helpers import named_key
from tests.web_helpers import Dashboard

browser, empty_dashboard = web_helpers.browser, web_helpers.empty_dashboard

# What the attacker's file runs when rendered on the dashboard's origin: with the admin's session
# it creates an admin key (the cookie rides along; no token is needed by the old code).
PAYLOAD = (
    "fetch('/api/keys',{method:'POST',credentials:'include',headers:{'content-type':'text/plain'},"
    "body:JSON.stringify({name:'pwned-NAME',role:'admin'})});"
    "document.title='ran';"
)


def keys(server: Any) -> set[str]:
    with server.api() as api:
        return {k["name"] for k in api.get("/keys", params={"revoked": "true"}).json()["data"]}


@contextlib.contextmanager
def logged_in(dashboard: Dashboard) -> Iterator[Any]:
    """A browser context with the admin logged in through the login form (a real session cookie,
    no Authorization header), as a person would be."""
    context = dashboard.browser.new_context()
    try:
        page = context.new_page()
        page.goto(dashboard.server.url + "/login")
        page.fill("#key", dashboard.server.admin_key)
        page.click("button[type=submit]")
        page.wait_for_url(dashboard.server.url + "/")
        page.wait_for_load_state("networkidle")
        yield page
    finally:
        context.close()


def test_a_developers_html_or_svg_artifact_runs_nothing_for_an_admin(empty_dashboard: Dashboard) -> None:
    server = empty_dashboard.server
    dev = named_key(server, "mallory", role="developer")
    with httpx.Client(base_url=server.url, headers=dev.headers, timeout=10) as http:
        run = http.post("/api/runs", json={"name": "innocent"}).json()
        rid = run["run_id"]
        html = f"<html><body><script>{PAYLOAD.replace('NAME', 'html')}</script>hi</body></html>"
        svg = (
            '<svg xmlns="http://www.w3.org/2000/svg"><script>'
            + PAYLOAD.replace("NAME", "svg")
            + "</script></svg>"
        )
        assert http.put(f"/api/runs/{rid}/artifacts/evil.html", content=html).status_code == 201
        assert http.put(f"/api/runs/{rid}/artifacts/evil.svg", content=svg).status_code == 201
        # The eval report a developer can overwrite, served by the API and by the dashboard.
        assert http.put(f"/api/runs/{rid}/artifacts/report.html", content=html.replace("html'", "report'"))
        download = http.get(f"/api/runs/{rid}/artifacts/evil.html")
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in download.headers["content-security-policy"]
    assert download.headers["content-type"].startswith("application/octet-stream")
    before = keys(server)
    with logged_in(empty_dashboard) as page:
        for path in (
            f"/api/runs/{rid}/artifacts/evil.html",
            f"/api/runs/{rid}/artifacts/evil.svg",
            f"/api/evals/runs/{rid}/report.html",
            f"/evals/{rid}/report.html",
        ):
            with contextlib.suppress(Exception):  # a download aborts the navigation: that is the point
                page.goto(server.url + path)
            page.wait_for_timeout(300)
            assert page.title() != "ran", path
    assert keys(server) == before  # no key was created by any of them


def attacker_site(target: str, key_id: str) -> Starlette:
    """A page on the same site (127.0.0.1, another port) that forges three changes."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"""<!doctype html><html><body>
<form id="revoke" method="post" action="{target}/keys/{key_id}/revoke" target="sink"></form>
<iframe name="sink"></iframe>
<script>
const opts = {{method: 'POST', credentials: 'include', headers: {{'content-type': 'text/plain'}}}};
Promise.allSettled([
  fetch('{target}/api/keys', {{...opts, body: JSON.stringify({{name: 'csrf-admin', role: 'admin'}})}}),
  fetch('{target}/api/datasets/csrf-data/import?format=jsonl',
        {{...opts, body: JSON.stringify({{input: {{q: 'x'}}, expected: 'y'}})}}),
]).then(() => {{ document.getElementById('revoke').submit(); document.title = 'sent'; }});
</script></body></html>"""
        )

    return Starlette(routes=[Route("/", page)])


def test_a_same_site_page_cannot_forge_changes_with_the_admins_session(
    empty_dashboard: Dashboard,
) -> None:
    server = empty_dashboard.server
    victim = named_key(server, "victim-key", role="viewer")
    with ThreadServer(attacker_site(server.url, victim.key_id)) as evil, logged_in(empty_dashboard) as page:
        assert evil.url.split(":")[1] == server.url.split(":")[1]  # same host: same site
        page.goto(evil.url + "/")
        page.wait_for_function("document.title === 'sent'", timeout=10_000)
        page.wait_for_timeout(1000)
    names = keys(server)
    assert "csrf-admin" not in names
    with server.api() as api:
        listed = {k["name"]: k for k in api.get("/keys", params={"revoked": "true"}).json()["data"]}
        assert listed["victim-key"]["revoked_at"] is None
        assert api.get("/datasets/csrf-data").status_code == 404


def session_cookie(server: Any) -> str:
    r = httpx.post(server.url + "/login", data={"key": server.admin_key}, follow_redirects=False)
    assert r.status_code == 303
    return r.cookies["shipyard_session"]


def test_forged_session_expiries_are_401_not_500(empty_dashboard: Dashboard) -> None:
    server = empty_dashboard.server
    key_id, _, nonce, mac = session_cookie(server).split(".")
    for expiry in ("²", "9" * 5000, "-1", "1e9", ""):
        # Raw bytes: a browser sends whatever the cookie holds, UTF-8 included.
        cookie = (b"cookie", f"shipyard_session={key_id}.{expiry}.{nonce}.{mac}".encode())
        r = httpx.get(server.url + "/api/traces", headers=[cookie])
        assert r.status_code == 401, (expiry[:10], r.status_code, r.text[:200])
        page = httpx.get(server.url + "/", headers=[cookie, (b"accept", b"text/html")])
        assert page.status_code in (303, 401), (expiry[:10], page.status_code)


def test_logging_out_ends_the_session(empty_dashboard: Dashboard) -> None:
    server = empty_dashboard.server
    cookie = session_cookie(server)
    jar = {"shipyard_session": cookie}
    assert httpx.get(server.url + "/api/traces", cookies=jar).status_code == 200
    home = httpx.get(server.url + "/", cookies=jar, headers={"accept": "text/html"}).text
    token = home.split('name="csrf-token" content="')[1].split('"')[0]
    out = httpx.post(server.url + "/logout", cookies=jar, data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    r = httpx.get(server.url + "/api/traces", cookies=jar)
    assert r.status_code == 401 and "logging out" in r.json()["error"]["message"]


def test_a_cookie_change_without_its_token_is_refused_but_a_key_needs_none(
    empty_dashboard: Dashboard,
) -> None:
    server = empty_dashboard.server
    jar = {"shipyard_session": session_cookie(server)}
    body = {"name": "no-token", "role": "viewer"}
    refused = httpx.post(server.url + "/api/keys", cookies=jar, json=body)
    assert refused.status_code == 403 and "CSRF token" in refused.json()["error"]["message"]
    home = httpx.get(server.url + "/", cookies=jar, headers={"accept": "text/html"}).text
    token = home.split('name="csrf-token" content="')[1].split('"')[0]
    ok = httpx.post(server.url + "/api/keys", cookies=jar, json=body, headers={"x-csrf-token": token})
    assert ok.status_code == 201
    with server.api() as api:  # an API key in Authorization: not a cookie, no token
        assert api.post("/keys", json={"name": "by-key", "role": "viewer"}).status_code == 201


def test_a_lone_surrogate_in_feedback_is_a_400(empty_dashboard: Dashboard) -> None:
    server = empty_dashboard.server
    reply = server.openai().chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    trace_id = reply.headers["x-shipyard-trace-id"]
    body = '{"trace_id": "TRACE", "score": "up", "comment": "bad \\ud800 text"}'.replace("TRACE", trace_id)
    with server.api() as api:
        r = api.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "comment", r.text
    assert json.loads(r.text)  # the error itself is valid JSON
