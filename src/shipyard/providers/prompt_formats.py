"""Turning OpenAI chat messages into one prompt string for a model that only continues text.

Each format returns a :class:`Rendered` (prompt text, stop sequences). ``transcript`` is the default
because the bundled Gemma 3 270M is a base model: it has no chat training and its GGUF carries no
``tokenizer.chat_template``, but it continues a plain ``User:`` / ``Assistant:`` transcript well.

What was tried for the transcript preamble (greedy decoding, Gemma 3 270M Q4_K_M, prompts "What is
the capital of France?", "Write a haiku about the sea.", "Name three colors.", "Give me a tip for
sleeping better."):

- no preamble, or a one-line "conversation between a user and a helpful assistant": echoes the
  question ("Name three colors.") or loops ("Assistant: Write a haiku… Assistant: Write a haiku…").
- a descriptive preamble without examples: drifts off-topic ("The assistant is a 20-year-old…").
- preamble + one greeting exchange: still echoes or deflects ("What color is this?").
- preamble + three short examples (a fact, a list, a three-line poem), single newlines between
  turns: on-topic answers that stop cleanly ("Paris.", "Blue, red, and yellow.", a three-line sea
  poem). Chosen. Blank lines between turns made it loop on the haiku; a fourth advice example made
  it copy that example verbatim for the sleep tip.
- a client system message as the intro line instead of this one, examples kept, works as well;
  without the examples the model echoes again, so the examples stay unless ``few_shot`` is off.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shipyard.content import content_text as shared_content_text
from shipyard.errors import ConfigError, InvalidRequest

PromptFormat = Literal["transcript", "chat_template", "chatml", "gemma", "raw"]
FORMATS: tuple[str, ...] = get_args(PromptFormat)

# Formats whose markup uses the model's control tokens, so the prompt must be tokenized with special
# tokens parsed. The plain-text formats are tokenized without, so a user who types "<end_of_turn>"
# cannot forge a turn boundary.
SPECIAL_TOKEN_FORMATS = frozenset({"chat_template", "chatml", "gemma"})

DEFAULT_PREAMBLE = (
    "Below is a conversation between a curious user and a knowledgeable, friendly assistant. "
    "The assistant answers every request directly and briefly."
)

FEW_SHOT_EXAMPLES = (
    "User: What is the largest planet in the solar system?\n"
    "Assistant: Jupiter is the largest planet in the solar system.\n"
    "User: Name two fruits.\n"
    "Assistant: Apples and bananas.\n"
    "User: Write a short poem about the moon.\n"
    "Assistant: Silver moon above,\nquiet light on sleeping hills,\nnight keeps its secrets.\n"
)

_TRANSCRIPT_LABELS = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
TRANSCRIPT_STOP = ["\nUser:", "\nAssistant:", "\nSystem:"]


class Rendered(NamedTuple):
    prompt: str
    stop: list[str]


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    """A Jinja chat template (Hugging Face convention) and the token texts it may reference."""

    source: str
    bos_token: str = ""
    eos_token: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    text: str


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or the ``text`` parts of a content-part list."""
    if content is None or isinstance(content, str | list):
        # Parts are pieces of one text the model reads: joined with nothing between them.
        return shared_content_text(content, "")
    raise InvalidRequest(
        f"message content must be a string or a list of content parts, got {type(content).__name__}",
        param="messages",
    )


_ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def normalize(messages: Any) -> list[Message]:
    """Validate OpenAI ``messages`` and reduce them to (role, text) pairs."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty list", param="messages")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object", param="messages")
        role = _ROLES.get(str(m.get("role")))
        if role is None:
            raise InvalidRequest(
                f"messages[{i}] has unknown role {m.get('role')!r}; expected one of {', '.join(_ROLES)}",
                param="messages",
            )
        out.append(Message(role, content_text(m.get("content"))))
    return out


def _split_system(messages: list[Message]) -> tuple[str, list[Message]]:
    """Leading system messages (the conversation's instructions) and the rest."""
    n = 0
    while n < len(messages) and messages[n].role == "system":
        n += 1
    return "\n".join(m.text.strip() for m in messages[:n] if m.text.strip()), messages[n:]


def render_transcript(
    messages: list[Message], *, system_prompt: str | None = None, few_shot: bool = True
) -> Rendered:
    system, rest = _split_system(messages)
    preamble = system or (system_prompt or "").strip() or DEFAULT_PREAMBLE
    parts = [preamble, "\n\n"]
    if few_shot:
        parts.append(FEW_SHOT_EXAMPLES)
    for m in rest:
        text = m.text.strip()
        if text:
            parts.append(f"{_TRANSCRIPT_LABELS[m.role]}: {text}\n")
    parts.append("Assistant:")
    return Rendered("".join(parts), list(TRANSCRIPT_STOP))


def render_chatml(messages: list[Message], *, system_prompt: str | None = None) -> Rendered:
    if system_prompt and not any(m.role == "system" for m in messages):
        messages = [Message("system", system_prompt), *messages]
    parts = [f"<|im_start|>{m.role}\n{m.text}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return Rendered("".join(parts), ["<|im_end|>", "<|im_start|>"])


def render_gemma(messages: list[Message], *, system_prompt: str | None = None) -> Rendered:
    # Gemma has only `user` and `model` turns; like Google's own template, instructions are put at
    # the top of the first user turn, and tool results are reported in a user turn.
    system, rest = _split_system(messages)
    system = system or (system_prompt or "").strip()
    parts: list[str] = []
    for m in rest:
        text = m.text.strip()
        if m.role == "system":
            text = f"Instructions: {text}"
        if system and m.role != "assistant":
            text = f"{system}\n\n{text}"
            system = ""
        role = "model" if m.role == "assistant" else "user"
        parts.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    if system:
        parts.append(f"<start_of_turn>user\n{system}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return Rendered("".join(parts), ["<end_of_turn>", "<start_of_turn>"])


def render_raw(messages: list[Message], *, system_prompt: str | None = None) -> Rendered:
    texts = [m.text for m in messages if m.text]
    if system_prompt and not any(m.role == "system" for m in messages):
        texts.insert(0, system_prompt)
    return Rendered("\n".join(texts), [])


class _TemplateRaised(jinja2.TemplateError):
    """A template called ``raise_exception`` (its way of rejecting a conversation)."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def check_template(template: ChatTemplate) -> None:
    """Raise :class:`ConfigError` now if the template does not parse, rather than on a request."""
    _compile(template.source)


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    # Templates come from model files: a sandbox keeps them from reaching Python internals.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"the chat template does not parse (line {exc.lineno}): {exc.message}") from None


def render_chat_template(
    messages: list[Message], template: ChatTemplate | None, *, system_prompt: str | None = None
) -> Rendered:
    if template is None or not template.source.strip():
        raise ConfigError(
            "prompt_format `chat_template` needs a chat template, and the model file has no "
            "`tokenizer.chat_template` metadata; set the provider option `chat_template`, or use "
            f"prompt_format {', '.join(f'`{f}`' for f in FORMATS if f != 'chat_template')}"
        )
    if system_prompt and not any(m.role == "system" for m in messages):
        messages = [Message("system", system_prompt), *messages]
    compiled = _compile(template.source)
    try:
        prompt = compiled.render(
            messages=[{"role": m.role, "content": m.text} for m in messages],
            add_generation_prompt=True,
            bos_token=template.bos_token,
            eos_token=template.eos_token,
        )
    except _TemplateRaised as exc:
        raise InvalidRequest(
            f"the model's chat template rejected the messages: {exc}", param="messages"
        ) from None
    except jinja2.TemplateError as exc:
        raise InvalidRequest(f"rendering the model's chat template failed: {exc}", param="messages") from None
    return Rendered(prompt, [template.eos_token] if template.eos_token else [])


def render(
    fmt: str,
    messages: Any,
    *,
    system_prompt: str | None = None,
    few_shot: bool = True,
    template: ChatTemplate | None = None,
) -> Rendered:
    """Render OpenAI ``messages`` in format ``fmt``. ``system_prompt`` stands in when the client sent
    no system message (for ``transcript`` it replaces the default preamble)."""
    msgs = normalize(messages)
    renderers: dict[str, Callable[[], Rendered]] = {
        "transcript": lambda: render_transcript(msgs, system_prompt=system_prompt, few_shot=few_shot),
        "chatml": lambda: render_chatml(msgs, system_prompt=system_prompt),
        "gemma": lambda: render_gemma(msgs, system_prompt=system_prompt),
        "raw": lambda: render_raw(msgs, system_prompt=system_prompt),
        "chat_template": lambda: render_chat_template(msgs, template, system_prompt=system_prompt),
    }
    try:
        renderer = renderers[fmt]
    except KeyError:
        raise ConfigError(f"unknown prompt format `{fmt}`; known formats: {', '.join(FORMATS)}") from None
    return renderer()
