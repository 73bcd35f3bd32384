"""Third-party providers plug in through the `shipyard` entry-point group, exactly like the
built-ins: a package installed next to Shipyard (here: put on PYTHONPATH with its dist-info) adds
a provider type that `shipyard.yaml` can use and the gateway serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import openai
import pytest

ROOT = Path(__file__).resolve().parents[1]


def plugin_source() -> str:
    """The plugin example from docs/providers.md, verbatim, so the documentation cannot rot."""
    doc = (ROOT / "docs" / "providers.md").read_text()
    match = re.search(r"```python\n(# my_shipyard_plugin\.py\n.*?)```", doc, re.S)
    assert match, "plugin example missing from docs/providers.md"
    return match.group(1)


def test_entry_point_plugin_serves_through_the_gateway(tmp_path: Path, shipyard_server: Any) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_shipyard_plugin.py").write_text(plugin_source())
    dist = site / "my_shipyard_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-shipyard-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[shipyard]\necho = my_shipyard_plugin\n")
    config = """
providers: [{name: parrot, type: echo, prefix: "you said: "}]
models: [{name: parrot-1, provider: parrot}]
routes: [{name: default, targets: [{model: parrot-1}]}]
"""
    server = shipyard_server(config, env={"PYTHONPATH": str(site)})
    client = server.openai()
    reply = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "ahoy"}])
    assert reply.choices[0].message.content == "you said: ahoy"
    unsupported = r"provider `parrot` \(echo\) does not support text completions"
    with pytest.raises(openai.BadRequestError, match=unsupported):
        client.completions.create(model="default", prompt="x")


def test_unknown_type_lists_plugin_types() -> None:
    from shipyard.errors import ConfigError
    from shipyard.registry.validation import parse_config

    with pytest.raises(ConfigError) as exc:
        parse_config("providers: [{name: p, type: nope}]", "t.yaml", {})
    assert "known types: anthropic, local, mock, openai, wordllama" in exc.value.problems[0]
