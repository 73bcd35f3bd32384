"""shipyard.yaml: validation errors name the field, the line and the fix; env references;
`shipyard config check` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.config.loader import default_config_text
from shipyard.errors import ConfigError
from shipyard.registry.validation import parse_config

GOOD = """
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    api_key: ${TEST_OPENAI_KEY}
  - name: fake
    type: mock
models:
  - name: gpt-4o-mini
    provider: openai
    pricing: {input_per_mtok: 0.15, output_per_mtok: 0.6}
  - name: fake-chat
    provider: fake
routes:
  - name: support
    targets:
      - {model: gpt-4o-mini, weight: 90}
      - {model: fake-chat, weight: 10}
    fallbacks: [{model: fake-chat, name: fake-fallback}]
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "test.yaml", env if env is not None else {"TEST_OPENAI_KEY": "sk-x"})
    return exc.value.problems or [exc.value.message]


def test_good_config_and_env_reference() -> None:
    loaded = parse_config(GOOD, "test.yaml", {"TEST_OPENAI_KEY": "sk-secret-value"})
    opts = loaded.provider_options["openai"]
    assert opts.api_key.get_secret_value() == "sk-secret-value"  # type: ignore[attr-defined]
    # The key is a secret: it never shows up in reprs (and so never in logs).
    assert "sk-secret-value" not in repr(opts) and "sk-secret-value" not in str(loaded.config)
    assert loaded.config.routes[0].targets[0].weight == 90


def test_missing_env_var_names_variable_field_and_line() -> None:
    (p,) = problems_of(GOOD, env={})
    assert "test.yaml:6" in p and "TEST_OPENAI_KEY" in p and "providers[0].api_key" in p
    assert "${TEST_OPENAI_KEY:-default}" in p


def test_env_default_syntax() -> None:
    loaded = parse_config(GOOD.replace("${TEST_OPENAI_KEY}", "${TEST_OPENAI_KEY:-}"), "t.yaml", {})
    assert loaded.provider_options["openai"].api_key.get_secret_value() == ""  # type: ignore[attr-defined]


def test_unknown_key_lists_known_keys_with_line() -> None:
    (p,) = problems_of(GOOD.replace("weight: 90}", "weight: 90, wieght: 3}"))
    assert p.startswith("test.yaml:18:")
    assert "routes[0].targets[0].wieght" in p and "unknown key" in p and "weight" in p


def test_wrong_type_and_range() -> None:
    (p,) = problems_of(GOOD.replace("weight: 90}", "weight: lots}"))
    assert "test.yaml:18" in p and "routes[0].targets[0].weight" in p
    (p,) = problems_of(GOOD.replace("weight: 90}", "weight: -1}"))
    assert "greater than or equal to 0" in p


def test_missing_required_field_says_what_to_add() -> None:
    (p,) = problems_of(GOOD.replace("    provider: fake\n", "\n"))
    assert "models[1].provider" in p and "add `provider:`" in p


def test_reference_errors_list_what_exists() -> None:
    problems = problems_of(GOOD.replace("{model: fake-chat, weight: 10}", "{model: gpt-x, weight: 10}"))
    assert any(
        "routes[0].targets[1].model" in p and "`gpt-x`" in p and "gpt-4o-mini, fake-chat" in p
        for p in problems
    )
    problems = problems_of(GOOD.replace("provider: openai\n    pricing", "provider: opnai\n    pricing"))
    assert any("no provider named `opnai`" in p and "openai, fake" in p for p in problems)


def test_unknown_provider_type_and_bad_provider_option() -> None:
    (p,) = problems_of(GOOD.replace("type: mock", "type: mokc"))
    assert "unknown provider type `mokc`" in p and "openai" in p and "mock" in p
    (p,) = problems_of(GOOD.replace("type: mock", "type: mock\n    latency: 5"))
    assert "test.yaml:9" in p and "providers[1].latency" in p and "latency_ms" in p


def test_duplicates_and_all_problems_at_once() -> None:
    text = (
        GOOD
        + """  - name: support
    targets: [{model: nothing}]
"""
    )
    problems = problems_of(text)
    assert len(problems) == 2
    assert any("`support` is already defined" in p for p in problems)


def test_duplicate_target_labels_are_reported() -> None:
    text = GOOD.replace("{model: fake-chat, weight: 10}", "{model: gpt-4o-mini, weight: 10}")
    (p,) = problems_of(text)
    assert "routes[0].targets" in p and "gpt-4o-mini" in p and "name:" in p


def test_yaml_syntax_error_has_line() -> None:
    (msg,) = problems_of("routes:\n  - name: x\n   targets: [\n")
    assert msg.startswith("test.yaml:") and "not valid YAML" in msg


def test_route_mixing_chat_and_embedding_models() -> None:
    text = GOOD.replace(
        "  - name: fake-chat\n    provider: fake\n",
        "  - name: fake-chat\n    provider: fake\n    kind: embedding\n",
    )
    problems = problems_of(text)
    assert any("mixes chat and embedding" in p for p in problems)


def test_builtin_default_is_valid() -> None:
    loaded = parse_config(default_config_text(), "default")
    assert [r.name for r in loaded.config.routes] == ["default"]
    assert {m.kind for m in loaded.config.models} == {"chat", "embedding"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_config_check_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD.replace("${TEST_OPENAI_KEY}", "${TEST_OPENAI_KEY:-}"))
    r = run_cli("config", "check", "--config", str(good), cwd=tmp_path)
    assert r.returncode == 0 and "is valid" in r.stdout and "2 provider(s)" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("weight: 90}", "weight: 90, wieght: 3}"))
    r = run_cli("config", "check", "-c", str(bad), cwd=tmp_path)
    assert r.returncode == 1
    assert "bad.yaml:18" in r.stderr and "wieght" in r.stderr and "Traceback" not in r.stderr
    # The file as a positional argument, the old spelling, still works.
    r = run_cli("config", "check", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert r.returncode == 1 and "does not exist" in r.stderr
    # With no file anywhere, the built-in default is what is checked.
    r = run_cli("config", "check", cwd=tmp_path)
    assert r.returncode == 0 and "built-in default" in r.stdout


def test_up_refuses_invalid_config_with_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "shipyard.yaml"
    bad.write_text("routes:\n  - name: r\n    targets: [{model: ghost}]\n")
    r = run_cli("up", "--port", "1", "--home", str(tmp_path / "h"), cwd=tmp_path)
    assert r.returncode == 2
    assert "shipyard.yaml:3" in r.stderr and "ghost" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "example", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_examples_are_valid(example: Path) -> None:
    parse_config(example.read_text(), str(example), {"OPENAI_API_KEY": "sk-example"})
