"""The login, Keys and Audit pages in real Chromium: a browser with no credentials is sent to the
login form, logs in with a key, creates and revokes a key through the Keys page, reads the audit
log with its chart, and logs out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import web_helpers
from tests.web_helpers import Dashboard, DashboardPage

browser, empty_dashboard = web_helpers.browser, web_helpers.empty_dashboard


@pytest.fixture
def anonymous(empty_dashboard: Dashboard) -> Iterator[DashboardPage]:
    """A page whose browser context sends no key: it has to log in like a person."""
    context = empty_dashboard.browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = DashboardPage(context.new_page(), empty_dashboard.server.url, empty_dashboard.shots)
        yield page
        page.check()
    finally:
        context.close()


def test_login_keys_audit_logout(anonymous: DashboardPage, empty_dashboard: Dashboard) -> None:
    server = empty_dashboard.server
    page: Any = anonymous.raw
    # Asking for a page without a session lands on the login form, which remembers where to go.
    anonymous.goto("/traces?range=24h")
    assert page.url.endswith("/login?next=%2Ftraces%3Frange%3D24h")
    anonymous.expect_text("Log in", "API key")
    page.fill("#key", server.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url("**/traces?range=24h")
    anonymous.wait_ready()
    page.wait_for_load_state("networkidle")
    anonymous.expect_text("admin (from the admin_key setting) · admin", "Log out")

    # Create a key through the Keys page: the secret is shown once, the list never shows it.
    anonymous.goto("/keys")
    page.fill("#name", "browser-made")
    page.select_option("#role", "viewer")
    page.click("#create-key button[type=submit]")
    page.wait_for_selector("#created-key")
    page.wait_for_load_state("networkidle")
    secret = page.inner_text("[data-secret]").strip()
    assert re.fullmatch(r"sk-shp-[A-Za-z0-9]{40}", secret)
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(server.url + "/api/prompts", headers=headers).status_code == 200
    anonymous.goto("/keys")
    assert secret not in page.content()
    row = page.locator("tr", has_text="browser-made")
    row.get_by_role("button", name="Revoke browser-made").click()
    page.wait_for_url("**/keys")
    # Each click's page settles (favicon included) before the next navigation, so no request of it
    # is aborted half way, which the harness reports as a problem.
    page.wait_for_load_state("networkidle")
    assert httpx.get(server.url + "/api/prompts", headers=headers).status_code == 401

    # The audit log shows both changes, with who made them, and draws its chart.
    anonymous.goto("/audit")
    anonymous.expect_text("key.create", "key.revoke", "chain intact")
    assert anonymous.expect_charts(1) == 1
    actions = page.eval_on_selector_all("#audit tbody tr", "rows => rows.map(r => r.dataset.action)")
    assert actions[:2] == ["key.revoke", "key.create"]
    assert "admin_key setting) (key_" in page.inner_text("#audit tbody tr:first-child")
    anonymous.screenshot("audit")

    # Logging out ends the session: the next page asks for the key again.
    page.click(".whoami button[type=submit]")
    page.wait_for_url("**/login")
    page.wait_for_load_state("networkidle")
    anonymous.goto("/")
    assert "/login" in page.url
