"""The text of chat messages, read one way everywhere (token estimates, guards, drift, prompt
formats, the dashboard's previews).

A message's ``content`` is a string, or OpenAI's list of content parts; every part with a string
``text`` counts, whatever its ``type`` says (a guard must not skip text because a client labelled
it oddly); images, audio and other parts have none. Callers choose how parts are joined: ``""``
where the parts are pieces of one text (a prompt the model reads), a newline where they are
separate texts (a guard or a preview).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def text_parts(content: Any) -> list[str]:
    """The text pieces of one message's content (empty for anything that is not text)."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def content_text(content: Any, joiner: str = "\n") -> str:
    """One message's text: its string content, or its text parts joined by ``joiner``."""
    return joiner.join(text_parts(content))


def messages_text(messages: Iterable[Any], joiner: str = "\n") -> str:
    """All messages' text, one after another (non-dict entries are skipped)."""
    return joiner.join(
        text for m in messages if isinstance(m, dict) and (text := content_text(m.get("content"), joiner))
    )


def input_text(value: Any) -> str:
    """The text of a request's input as a trace records it: a prompt string, chat messages, or a
    list of strings (completions and embeddings take several)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return messages_text(value)
        return "\n".join(str(v) for v in value)
    return ""
