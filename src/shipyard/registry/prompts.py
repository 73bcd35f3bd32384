"""Prompt templates: a list of chat messages whose contents are sandboxed Jinja2.

Templates come from people (and from the registry API), so they render in Jinja2's sandbox: no
attribute access to Python internals, no imports. Undefined variables are errors, never silently
empty strings — a prompt that lost its customer name should fail loudly, naming the variable.

A render is also *bounded* (see docs/gateway.md, "Prompt templates"): it renders on the request
path, so a template with nested ``range(99999)`` loops must not pin a core or hold up shutdown.
Every loop step, call, filter, operator and piece of output checks a deadline
(``prompt_render_timeout``) and counts the text built (``prompt_render_max_chars``); operations
that would build one huge value at once (``"x" * 10**9``, ``2 ** 10**9``, ``center(10**9)``) are
refused before they run, since nothing can interrupt a single built-in call.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg, pass_context, pass_eval_context

from shipyard.errors import InvalidRequest, ShipyardError
from shipyard.settings import BY_NAME


# -- limits --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RenderLimits:
    """How long one render may take and how much text it may build (settings
    ``prompt_render_timeout`` and ``prompt_render_max_chars``; their defaults unless set)."""

    seconds: float = BY_NAME["prompt_render_timeout"].default
    chars: int = BY_NAME["prompt_render_max_chars"].default


_limits = RenderLimits()


def set_render_limits(limits: RenderLimits) -> None:
    """Use ``limits`` for every render in this process (the server sets them from its settings)."""
    global _limits
    _limits = limits


def render_limits() -> RenderLimits:
    return _limits


# Text built on the way to the output (filters, `~`, `{% set %}` blocks) may add up to this many
# times the output limit: a template that cleans a large document in a few steps still renders.
WORK_FACTOR = 8
# Integers a template computes stay below this many bits (about 4,900 digits).
MAX_INT_BITS = 16384
# Methods of strings that multiply their input in one call, with arguments a size check cannot
# see (a translation table, tab widths); prompts have no use for them.
_BLOCKED_METHODS = frozenset({"translate", "maketrans", "expandtabs", "encode"})
# Methods of strings whose integer arguments are the size of what they return.
_SIZE_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


class RenderLimitExceeded(InvalidRequest):
    """A render went over its time or size limit (HTTP 400)."""

    code = "prompt_render_limit"


class _Over(Exception):
    """Raised inside a render; :meth:`Prompt.render` turns it into RenderLimitExceeded."""


@dataclass
class _Budget:
    limits: RenderLimits
    deadline: float
    built: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Over(
                f"it ran for more than {self.limits.seconds:g} s (setting `prompt_render_timeout`); "
                "check its loops (nested `for`, `range(…)`) and how large the `variables` it loops over are"
            )

    def size(self, n: int, what: str) -> None:
        """A value of ``n`` characters (or items) is about to exist."""
        if n > self.limits.chars:
            raise _Over(
                f"{what} would make a value of {n:,} characters (or items), more than the "
                f"{self.limits.chars:,} a render may produce (setting `prompt_render_max_chars`)"
            )

    def build(self, n: int) -> None:
        """``n`` characters were built (output, or text on the way to it)."""
        self.built += n
        if self.built > self.limits.chars * WORK_FACTOR:
            raise _Over(
                f"it built more than {self.limits.chars * WORK_FACTOR:,} characters of text on the way to "
                f"its output ({WORK_FACTOR}x the setting `prompt_render_max_chars`)"
            )


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "shipyard_render_budget", default=None
)


def _current() -> _Budget:
    b = _budget.get()
    if b is None:
        # Outside Prompt.render (constant folding while a template compiles): sizes still count.
        return _Budget(_limits, math.inf)
    return b


# -- checks on values and arguments ------------------------------------------------------------------
def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict | set | frozenset) else None


def _too_big_number(what: str) -> _Over:
    return _Over(
        f"{what} would make a number of more than {MAX_INT_BITS:,} bits, more than a template may compute"
    )


def _check_result(b: _Budget, value: Any, what: str) -> Any:
    n = _length(value)
    if n is not None:
        b.size(n, what)
        if isinstance(value, str):
            b.build(n)
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _too_big_number(what)
    return value


def _check_int_args(b: _Budget, args: Iterable[Any], what: str) -> None:
    """Arguments that are output sizes (a width, a count of fill items)."""
    for v in args:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > b.limits.chars:
            b.size(abs(v), f"{what} with argument {v}")


_PERCENT_FIELD = re.compile(r"%[-#0 +]*(\*|\d*)(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


def _check_format(b: _Budget, fmt: Any, args: Iterable[Any], what: str) -> None:
    """Widths and precisions in a format string (`%10000000d`, `{:>10000000}`) are output sizes,
    and so are the arguments that a `*` or a nested `{}` takes them from."""
    if not isinstance(fmt, str):
        return
    numbers = [n for m in _PERCENT_FIELD.finditer(fmt) for n in m.groups() if n]
    fields = [m.group() for m in _BRACE_FIELD.finditer(fmt)]
    numbers += [n for f in fields for n in re.findall(r"\d+", f.partition(":")[2])]
    for n in numbers:
        if n == "*":
            _check_int_args(b, args, what)
        elif len(n) > 9 or int(n) > b.limits.chars:
            b.size(int(n[:12]), f"{what} with a field of width {n}")
    if any("{" in f[1:] for f in fields):
        _check_int_args(b, args, what)


def _check_replace(b: _Budget, s: Any, old: Any, new: Any, what: str) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = s.count(old) if old else len(s) + 1
        b.size(len(s) + hits * (len(new) - len(old)), what)


def _check_join(b: _Budget, sep: Any, items: Any, what: str) -> None:
    if isinstance(sep, str) and isinstance(items, Sized):
        b.size(len(sep) * max(0, len(items) - 1), what)


def _check_filter(b: _Budget, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Filters whose output can be far bigger than their input, sized before they run."""
    what = f"filter `{name}`"
    value = args[0] if args else None
    arg = list(args[1:])
    if name in ("center", "batch"):
        _check_int_args(b, [*arg, *kwargs.values()], what)
    elif name == "replace" and len(arg) >= 2:
        _check_replace(b, value, arg[0], arg[1], what)
    elif name == "join":
        _check_join(b, arg[0] if arg else kwargs.get("d", ""), value, what)
    elif name == "format":
        _check_format(b, value, [*arg, *kwargs.values()], what)
    elif name == "indent" and isinstance(value, str):
        width = arg[0] if arg else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        b.size(len(value) + per_line * (value.count("\n") + 1), what)
    elif name == "wordwrap" and isinstance(value, str):
        width = arg[0] if arg else kwargs.get("width", 79)
        wrap = arg[2] if len(arg) > 2 else kwargs.get("wrapstring")
        if isinstance(width, int) and isinstance(wrap, str):
            b.size(len(value) + len(wrap) * (len(value) // max(1, width) + 1), what)
    elif name == "slice" and isinstance(value, Sized):
        slices = arg[0] if arg else kwargs.get("slices", 0)
        if isinstance(slices, int):
            b.size(max(slices, len(value)), what)


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    skip = 0 if _PassArg.from_obj(func) is None else 1  # the context/environment Jinja passes first

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        b = _current()
        b.tick()
        _check_filter(b, name, args[skip:], kwargs)
        return _check_result(b, func(*args, **kwargs), f"filter `{name}`")

    return bounded


@pass_context
def _steps(context: Any, iterable: Any) -> Iterator[Any]:
    """Every `{% for %}` loop iterates through this: each step checks the deadline."""
    b = _current()
    for item in iterable:
        b.tick()
        yield item


@pass_eval_context
def _finalize(eval_ctx: Any, value: Any) -> str:
    """Every piece of output (also into `{% set %}` blocks and macros) is counted."""
    text = str(value)
    b = _current()
    b.tick()
    b.build(len(text))
    return text


def _loop_steps(tree: nodes.Template) -> None:
    """Route every loop through `_steps`, and make template text a runtime value that
    `_finalize` counts (a literal repeated by a loop is output too)."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "_shipyard_steps", [], [], None, None, lineno=loop.lineno)
    for output in tree.find_all(nodes.Output):
        output.nodes = [
            nodes.Const(n.data, lineno=n.lineno) if isinstance(n, nodes.TemplateData) else n
            for n in output.nodes
        ]


class _Generator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # `a ~ b` builds through the environment, which sizes the result before joining.
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _Generator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_finalize,
        )
        self.globals.pop("lipsum", None)  # lorem ipsum of any length, in one call
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters["_shipyard_steps"] = _steps

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _loop_steps(tree)
        tree.set_environment(self)
        return tree

    def bounded_concat(self, parts: tuple[Any, ...]) -> str:
        b = _current()
        b.tick()
        texts = [str(p) for p in parts]
        b.size(sum(map(len, texts)), "`~`")
        out = "".join(texts)
        b.build(len(out))
        return out

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        b = _current()
        b.tick()
        what = f"`{operator}`"
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*":
            if ints:
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise _too_big_number(what)
            else:
                for seq, times in ((left, right), (right, left)):
                    n = _length(seq)
                    if n is not None and isinstance(times, int):
                        b.size(n * times, what)
        elif operator == "**" and ints and right > 0 and abs(left) > 1:
            if right * left.bit_length() > MAX_INT_BITS:
                raise _too_big_number(what)
        elif operator == "+":
            a, c = _length(left), _length(right)
            if a is not None and c is not None:
                b.size(a + c, what)
        elif operator == "%" and isinstance(left, str):
            _check_format(b, left, right if isinstance(right, tuple) else (right,), what)
        return _check_result(b, super().call_binop(context, operator, left, right), what)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        b = _current()
        b.tick()
        name = getattr(__obj, "__name__", None) or type(__obj).__name__
        what = f"`{name}()`"
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        if isinstance(owner, str | bytes):
            if name in _BLOCKED_METHODS:
                raise SecurityError(f"`str.{name}()` is not available in prompt templates")
            if name == "replace" and len(args) >= 2:
                _check_replace(b, owner, args[0], args[1], what)
            elif name == "join" and args:
                _check_join(b, owner, args[0], what)
            elif name == "format":
                _check_format(b, owner, [*args, *kwargs.values()], what)
            elif name == "format_map" and args and isinstance(args[0], dict):
                _check_format(b, owner, args[0].values(), what)
            elif name in _SIZE_METHODS:
                _check_int_args(b, [*args, *kwargs.values()], what)
        return _check_result(b, super().call(__context, __obj, *args, **kwargs), what)


@functools.cache
def _env() -> _BoundedEnvironment:
    return _BoundedEnvironment()


# -- checks at registration ---------------------------------------------------------------------------
def _templates(messages: list[dict[str, Any]]) -> Iterator[tuple[int, str]]:
    """(index, content) of each message whose content is a string: the only content the checks
    at registration look at."""
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, str):
            yield i, content


def check_templates(messages: list[dict[str, Any]]) -> list[str]:
    """Syntax problems, one string per broken message (empty when all compile)."""
    problems = []
    for i, content in _templates(messages):
        try:
            _env().parse(content)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                f"messages[{i}].content: template syntax error on line {exc.lineno}: {exc.message}"
            )
    return problems


PLACEHOLDER = "x"


def check_render_limits(messages: list[dict[str, Any]]) -> list[str]:
    """Templates that go over the render limits even with a placeholder for every variable
    (``range(99999)`` loops): one string per message. Other render errors are left to render
    time, since the placeholders are not real values."""
    problems = []
    for i, content in _templates(messages):
        try:
            template = _env().from_string(content)
        except jinja2.TemplateSyntaxError:
            continue  # check_templates reports it
        variables = dict.fromkeys(meta.find_undeclared_variables(_env().parse(content)), PLACEHOLDER)
        try:
            _bounded_render(template, variables, _Budget(_limits, time.monotonic() + _limits.seconds))
        except _Over as exc:
            problems.append(
                f"messages[{i}].content: rendering it with a placeholder for each variable went over the "
                f"render limits: {exc}"
            )
        except Exception:
            continue
    return problems


def _bounded_render(template: jinja2.Template, variables: dict[str, Any], budget: _Budget) -> str:
    token = _budget.set(budget)
    try:
        return template.render(**variables)
    finally:
        _budget.reset(token)


def variables_of(messages: list[dict[str, Any]]) -> list[str]:
    """Every variable the templates use, sorted."""
    found: set[str] = set()
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            try:
                found |= meta.find_undeclared_variables(_env().parse(content))
            except jinja2.TemplateSyntaxError:
                continue
    return sorted(found)


@dataclass
class Prompt:
    """One prompt version, ready to render."""

    name: str
    version: int
    hash: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    response_schema: dict[str, Any] | None = None
    variables: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, name: str, version: int, hash_: str, spec: dict[str, Any]) -> Prompt:
        messages = [dict(m) for m in spec.get("messages") or []]
        problems = check_templates(messages)
        if problems:
            raise InvalidRequest(f"prompt `{name}` v{version}: " + "; ".join(problems))
        return cls(
            name=name,
            version=version,
            hash=hash_,
            messages=messages,
            params=dict(spec.get("params") or {}),
            response_schema=spec.get("response_schema"),
            variables=variables_of(messages),
        )

    @functools.cached_property
    def _templates(self) -> list[jinja2.Template]:
        return [_env().from_string(m["content"]) for m in self.messages]

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def render(self, variables: dict[str, Any]) -> list[dict[str, Any]]:
        """The messages, rendered within the render limits (one budget for all of them)."""
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise InvalidRequest(
                f"prompt `{self.ref}` needs variable(s) {', '.join(f'`{m}`' for m in missing)}; send them in "
                f"`variables` (it uses: {', '.join(self.variables)})",
                param="variables",
            )
        limits = _limits
        budget = _Budget(limits, time.monotonic() + limits.seconds)
        out = []
        for i, (m, template) in enumerate(zip(self.messages, self._templates, strict=True)):
            try:
                content = _bounded_render(template, variables, budget)
            except _Over as exc:
                raise RenderLimitExceeded(
                    f"prompt `{self.ref}` went over its render limits in messages[{i}]: {exc}",
                    param="variables",
                ) from None
            except ShipyardError:
                raise
            except jinja2.TemplateError as exc:
                raise InvalidRequest(
                    f"prompt `{self.ref}` failed to render: {exc}", param="variables"
                ) from None
            except Exception as exc:
                # A template's own mistake with these values (1/0, an int too large to print,
                # recursion): the client's request or the template needs fixing, not the server.
                raise InvalidRequest(
                    f"prompt `{self.ref}` failed to render messages[{i}]: {type(exc).__name__}: {exc}",
                    param="variables",
                ) from None
            out.append({"role": m["role"], "content": content})
        return out
