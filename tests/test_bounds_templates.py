"""Prompt template renders are bounded (issue 12, item 5): a template whose loops or values blow
up is a clear 400 on the request path, on the admin API's render preview and at registration,
never a pinned core or a shutdown that waits for it. Through the real server.

Before the fix, nested `range(99999)` loops rendered for as long as they took (hours), holding
a core and delaying shutdown by the whole `shutdown_timeout`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from shipyard.errors import InvalidRequest
from shipyard.registry.prompts import Prompt, RenderLimitExceeded
from tests.conftest import ShipyardServer

# Loop bounds come from the request, so the template passes registration (with placeholders it
# loops over nothing) and the client decides how much work a render is.
LOOPS = "{% for i in range(n) %}{% for j in range(n) %}{% for k in range(n) %}" + "{% endfor %}" * 3
CONFIG = f"""
providers:
  - {{name: fake, type: mock, echo: true}}
models:
  - {{name: chat, provider: fake}}
prompts:
  - name: loops
    messages:
      - {{role: user, content: "{LOOPS}done {{{{ n }}}}"}}
  - name: repeat
    messages:
      - {{role: user, content: "{{{{ word * times }}}}"}}
routes:
  - name: loops
    prompt: loops
    targets: [{{model: chat}}]
  - name: repeat
    prompt: repeat
    targets: [{{model: chat}}]
"""
NESTED = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipyardServer]:
    s = ShipyardServer(tmp_path_factory.mktemp("templates") / "home", CONFIG).start()
    yield s
    s.stop()


def chat(server: ShipyardServer, route: str, variables: dict[str, Any]) -> Any:
    client = server.openai(timeout=20)
    return client.chat.completions.create(model=route, messages=[], extra_body={"variables": variables})


def test_a_runaway_render_on_the_request_path_is_a_quick_400(server: ShipyardServer) -> None:
    assert chat(server, "loops", {"n": 3}).choices[0].message.content == "done 3"
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError) as err:
        chat(server, "loops", {"n": 99999})
    took = time.monotonic() - started
    e = err.value.response.json()["error"]
    assert e["code"] == "prompt_render_limit" and e["param"] == "variables"
    assert "prompt `loops@v1`" in e["message"] and "more than 0.5 s" in e["message"]
    assert "`prompt_render_timeout`" in e["message"]
    assert took < 5, took
    # The server is free again at once.
    assert httpx.get(server.url + "/healthz", timeout=2).status_code == 200
    assert chat(server, "loops", {"n": 2}).choices[0].message.content == "done 2"


def test_a_render_too_large_is_a_400_naming_the_size_setting(server: ShipyardServer) -> None:
    assert chat(server, "repeat", {"word": "ab", "times": 3}).choices[0].message.content == "ababab"
    with pytest.raises(openai.BadRequestError) as err:
        chat(server, "repeat", {"word": "ab", "times": 10**9})
    e = err.value.response.json()["error"]
    assert e["code"] == "prompt_render_limit"
    assert "2,000,000,000 characters" in e["message"] and "`prompt_render_max_chars`" in e["message"]


def test_the_render_preview_is_bounded_too(server: ShipyardServer) -> None:
    with server.api(timeout=20) as api:
        ok = api.post("/prompts/loops/render", json={"variables": {"n": 2}})
        assert ok.status_code == 200 and ok.json()["messages"][0]["content"] == "done 2"
        started = time.monotonic()
        r = api.post("/prompts/loops/render", json={"variables": {"n": 99999}})
        assert time.monotonic() - started < 5
        assert r.status_code == 400, r.text
        assert "`prompt_render_timeout`" in r.json()["error"]["message"]
        # Errors of the template's own making are 400s as well, not 500s.
        r = api.post("/prompts/repeat/render", json={"variables": {"word": "ab", "times": "x"}})
        assert r.status_code == 400 and "failed to render" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (NESTED, "`prompt_render_timeout`"),
        ("{{ 'x' * 1000000000 }}", "`prompt_render_max_chars`"),
        ("{{ 'x' | center(1000000000) }}", "`prompt_render_max_chars`"),
    ],
)
def test_registration_refuses_a_template_over_the_limits(
    server: ShipyardServer, content: str, expected: str
) -> None:
    with server.api(timeout=20) as api:
        started = time.monotonic()
        r = api.post(
            "/prompts", json={"name": "slow", "spec": {"messages": [{"role": "user", "content": content}]}}
        )
        assert time.monotonic() - started < 5
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert (
            "prompts[0].messages[0].content" in message and "placeholder" in message and expected in message
        )
        assert api.get("/prompts/slow").status_code == 404


def test_shutdown_does_not_wait_for_a_runaway_render(shipyard_server: Any) -> None:
    server = shipyard_server(CONFIG)
    failed: list[BaseException] = []

    def runaway() -> None:
        try:
            chat(server, "loops", {"n": 99999})
        except BaseException as exc:  # the 400, or the connection closing as the server stops
            failed.append(exc)

    caller = threading.Thread(target=runaway)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
    caller.join(30)
    assert failed


def one_message(content: str) -> Prompt:
    return Prompt.from_spec("p", 1, "h", {"messages": [{"role": "user", "content": content}]})


@pytest.mark.parametrize(
    "content",
    [
        NESTED,
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "{{ 2 ** 100000000 }}",
        "{{ 'x'.ljust(1000000000) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%*d' % (999999999, 1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:>{}}'.format('x', 999999999) }}",
        "{{ ('a' * 100000) | replace('a', 'b' * 1000) }}",
        "{{ range(10000) | join('x' * 10000) }}",
        "{{ ('a\n' * 1000000) | indent(1000) }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s=['ab']) %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
        "{% set x %}{% for i in range(1000) %}{% for j in range(1000) %}" + "A" * 100 + "{% endfor %}"
        "{% endfor %}{% endset %}",
    ],
)
def test_render_bombs_stop_before_they_go_off(content: str) -> None:
    started = time.monotonic()
    with pytest.raises(RenderLimitExceeded) as err:
        one_message(content).render({})
    assert time.monotonic() - started < 2
    message = err.value.message
    assert any(m in message for m in ("`prompt_render_timeout`", "`prompt_render_max_chars`", "bits")), (
        message
    )


def test_ordinary_templates_render_as_before() -> None:
    content = (
        "{{ '{:,}'.format(12345678) }} {{ '%05d' % 42 }} {{ '%d'|format(98765432) }} "
        "{% macro money(x) %}${{ x }}{% endmacro %}{{ money(12345678) }} {{ 'x'|center(5) }}|"
        "{% for d in docs %}{{ loop.index }}.{{ d }} {% endfor %}{{ docs|join(', ') }}"
    )
    out = one_message(content).render({"docs": ["a", "b"]})[0]["content"]
    assert out == "12,345,678 00042 98765432 $12345678   x  |1.a 2.b a, b"
    with pytest.raises(InvalidRequest, match="ZeroDivisionError"):
        one_message("{{ 1 / 0 }}").render({})
    with pytest.raises(InvalidRequest, match="not available in prompt templates"):
        one_message("{{ 'abc'.translate({}) }}").render({})
