"""A model worker: one process that runs one local model and answers generation jobs over pipes.

Native model code (llama.cpp) runs here, never in the gateway: a crash in the model — a CPU
feature that faults, a bad GGUF, the kernel's OOM killer — ends this process and the request it was
serving, and the gateway's supervisor (:mod:`shipyard.providers.workers`) reports it and starts a
new one. The gateway keeps the queue; a worker holds at most one job at a time.

The channel is length-prefixed JSON frames (4-byte big-endian length, then orjson) on the worker's
stdin (gateway → worker) and on a private copy of its stdout (worker → gateway). File descriptor 1
is then pointed at stderr, so a stray print from native code cannot corrupt the channel; stderr is
the worker's log, whose last lines the supervisor reports when the worker dies.

gateway → worker: ``init`` (first frame: what to load), ``run``, ``cancel``, ``stop``
worker → gateway: ``loading`` (what it is about to do), then ``hello`` (loaded, self-test
answered) or ``fail`` (a clean load error); per job: ``started``, ``text``…, then ``done`` or
``error``.

This module is imported by the gateway too (for the frame helpers and the text handling), so it
imports nothing heavy at module level.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import importlib
import logging
import os
import queue
import re
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

MAX_FRAME = 64 * 1024 * 1024  # a run frame of a 128k-token prompt is ~1 MB: far above anything real
_LENGTH = struct.Struct(">I")


# -- frames ---------------------------------------------------------------------------------------


def write_frame(out: IO[bytes], message: dict[str, Any]) -> None:
    data = orjson.dumps(message)
    out.write(_LENGTH.pack(len(data)) + data)
    out.flush()


def read_frame(inp: IO[bytes]) -> dict[str, Any] | None:
    """The next frame, or None at end of file (the other side closed or died)."""
    head = _read_exactly(inp, _LENGTH.size)
    if head is None:
        return None
    (size,) = _LENGTH.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
    body = _read_exactly(inp, size)
    if body is None:
        return None
    message = orjson.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a frame must be a JSON object")
    return message


def _read_exactly(inp: IO[bytes], n: int) -> bytes | None:
    parts: list[bytes] = []
    while n:
        chunk = inp.read(n)
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


class Sender:
    """Writes frames from several threads (the job loop and the self-test reporter)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self._lock:
            write_frame(self._out, message)


# -- the model behind a small seam -------------------------------------------------------------------


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sampling:
        return cls(**{name: data[name] for name in cls.__slots__})

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Engine(Protocol):
    """What a worker needs from a model. :class:`LlamaEngine` is the real one; tests pass fakes
    (in the gateway's process, or in a worker through the provider option ``engine_factory``)."""

    n_ctx: int
    n_vocab: int

    def tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        """Token ids of ``text``; ``bos`` adds the beginning-of-sequence token if the model uses one."""
        ...

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[bytes]:
        """The bytes of each generated token, ending at the model's end-of-generation token. Never
        yields the model's control tokens. Called from one thread at a time."""
        ...

    def template(self) -> dict[str, str] | None:
        """The model's own chat template (``source``) and its BOS/EOS texts, if it has one."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


# Text a tokenizer marks as user-defined but which is a marker for the model, not text to show:
# <|im_start|>-style tokens, Gemma's <start_of_image>/<end_of_image>, [multimodal]-style tags.
_MARKER = re.compile(rb"^(<\|[^|<>]*\|>|<(start|end)_of_\w+>|\[\w+\])$")


class LlamaEngine:
    def __init__(self, llm: Any, path: Path, threads: int, prefix_cache: bool, repack: bool) -> None:
        import llama_cpp
        import numpy as np

        self._llama_cpp = llama_cpp
        self.llm = llm
        self.path = path
        self.threads = threads
        self.prefix_cache = prefix_cache
        self.repack = repack
        self.n_ctx: int = llm.n_ctx()
        self.n_vocab: int = llm.n_vocab()
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._bos: int = llm.token_bos()
        # Whether the model wants a BOS token, as its tokenizer decides (GGUF metadata may omit it).
        self._adds_bos = llm.tokenize(b"", add_bos=True, special=False)[:1] == [self._bos]
        banned = self._control_tokens()
        self._banned = np.array(banned, dtype=np.int64)
        self._logits = llama_cpp.LogitsProcessorList([self._ban]) if banned else None

    def _control_tokens(self) -> list[int]:
        """Tokens a client must never see: control and unused tokens (except end-of-generation,
        which ends the answer) and user-defined marker tokens. A base model left to continue raw
        text will otherwise happily emit ``<start_of_image>`` forty times."""
        c = self._llama_cpp
        skip = c.LLAMA_TOKEN_ATTR_CONTROL | c.LLAMA_TOKEN_ATTR_UNUSED | c.LLAMA_TOKEN_ATTR_UNKNOWN
        out = []
        for token in range(self.n_vocab):
            if c.llama_vocab_is_eog(self._vocab, token):
                continue
            attr = c.llama_vocab_get_attr(self._vocab, token)
            if attr & skip or (
                attr & c.LLAMA_TOKEN_ATTR_USER_DEFINED
                and _MARKER.match(bytes(self.llm.detokenize([token], special=True)))
            ):
                out.append(token)
        return out

    def _ban(self, input_ids: Any, scores: Any) -> Any:
        scores[self._banned] = float("-inf")
        return scores

    def tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
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
            logits_processor=self._logits,
        ):
            if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
                return
            yield self.llm.detokenize([token])

    def template(self) -> dict[str, str] | None:
        source = self.llm.metadata.get("tokenizer.chat_template")
        if not source:
            return None

        def text(token: int) -> str:
            return (
                ""
                if token < 0
                else bytes(self.llm.detokenize([token], special=True)).decode("utf-8", "replace")
            )

        return {"source": source, "bos": text(self._bos), "eos": text(self.llm.token_eos())}

    def describe(self) -> str:
        repack = "on" if self.repack else "off"
        return f"{self.path.name}, n_ctx {self.n_ctx}, {self.threads} thread(s), CPU repack {repack}"

    def close(self) -> None:
        self.llm.close()


def system_info() -> str:
    """llama.cpp's own report of the CPU features its build uses (``AVX2 = 1 | AMX_INT8 = 1 …``)."""
    import llama_cpp

    return bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace").strip()


def resolve_repack(setting: str, info: str) -> bool:
    """Whether to let llama.cpp repack weights into CPU-specific buffers ("extra buffer types").

    ``auto`` turns it off when the build uses Intel AMX: llama.cpp's AMX matrix multiply crashes
    on some CPUs that advertise AMX (llama.cpp issue 20824; a general protection fault at
    ``ldtilecfg``), and AMX is reached only through those buffers. Elsewhere (AVX2/AVX-512 repack,
    ARM) repacking stays on."""
    if setting == "on":
        return True
    if setting == "off":
        return False
    return "AMX_INT8 = 1" not in info


def load_llama(options: dict[str, Any], repack: bool) -> LlamaEngine:
    """Load the GGUF with llama.cpp; ``use_extra_bufts`` (not a ``Llama()`` argument) set as asked."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    path = Path(options["model_path"])
    threads = int(options["threads"])
    seed = options.get("seed")
    defaults = low.llama_model_default_params

    def model_params() -> Any:
        params = defaults()
        params.use_extra_bufts = repack
        return params

    # Llama() builds its model parameters from this function and loads the model in __init__; this
    # process exists only to run this one model, so swapping it for the load is contained here.
    low.llama_model_default_params = model_params
    try:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=int(options["n_ctx"]),
            n_batch=int(options["n_batch"]),
            n_threads=threads,
            n_threads_batch=threads,
            seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else int(seed) & 0xFFFFFFFF,
            # Verbose: llama.cpp's load log goes to this worker's stderr, which only the supervisor
            # reads; when a load fails, its last lines say why ("tensor data is not within the file
            # bounds"), where verbose=False would have sent them to /dev/null.
            verbose=True,
        )
    finally:
        low.llama_model_default_params = defaults
    logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)
    return LlamaEngine(llm, path, threads, bool(options.get("prefix_cache")), repack)


def load_factory(spec: str, options: dict[str, Any]) -> Engine:
    """An engine from ``module:function`` (the provider option ``engine_factory``)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"engine_factory must look like `package.module:function`; got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attr)
    engine: Engine = factory(options)
    return engine


# -- text handling --------------------------------------------------------------------------------


class TextStream:
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


class LoopGuard:
    """Notices a generation stuck in a loop: the same run of up to ``max_period`` tokens repeated
    ``repeats`` times in a row, covering at least ``min_tokens`` tokens (so a short legitimate
    repetition — "ha ha ha", a row of dashes — is left alone). Small base models fall into such
    loops at low temperature ("Good morning,\\ngood morning,\\n…" until max_tokens)."""

    def __init__(self, repeats: int, max_period: int = 32, min_tokens: int = 24) -> None:
        self.repeats = repeats
        self.max_period = max_period
        self.min_tokens = min_tokens
        self._window = max_period * max(repeats, 1) + min_tokens
        self._recent: list[bytes] = []

    def looping(self, piece: bytes) -> bool:
        if self.repeats < 2:
            return False
        recent = self._recent
        recent.append(piece)
        if len(recent) > self._window:
            del recent[: len(recent) - self._window]
        n = len(recent)
        for period in range(1, self.max_period + 1):
            span = max(period * self.repeats, -(-self.min_tokens // period) * period)
            if span > n:
                break
            if recent[n - 1] != recent[n - 1 - period]:
                continue
            tail = recent[n - span :]
            if all(tail[i] == tail[i - period] for i in range(period, span)):
                return True
        return False


# -- serving jobs ---------------------------------------------------------------------------------


Send = Callable[[dict[str, Any]], None]


def run_job(engine: Engine, job: dict[str, Any], send: Send, cancelled: Callable[[], bool]) -> None:
    """Tokenize, check the context, generate; frames for the gateway as text is produced."""
    jid = job["id"]
    prompt = job["prompt"]
    tokens = (
        engine.tokenize(prompt, bos=True, special=bool(job.get("special")))
        if isinstance(prompt, str)
        else [int(t) for t in prompt]
    )
    if not tokens:
        send({"t": "error", "id": jid, "kind": "empty"})
        return
    if len(tokens) >= engine.n_ctx:
        context = {"prompt_tokens": len(tokens), "n_ctx": engine.n_ctx}
        send({"t": "error", "id": jid, "kind": "context", **context})
        return
    # The answer gets whatever room the context has left rather than failing the request.
    max_tokens = min(int(job["max_tokens"]), engine.n_ctx - len(tokens))
    started = time.monotonic()
    send({"t": "started", "id": jid, "prompt_tokens": len(tokens)})
    text = TextStream(job.get("stop") or (), bool(job.get("strip")))
    guard = LoopGuard(int(job.get("max_repeats") or 0))
    produced = 0
    finish = "length"
    pieces = engine.generate(tokens, Sampling.from_dict(job["sampling"]))
    try:
        for piece in pieces:
            if cancelled():
                finish = "cancelled"
                break
            produced += 1
            delta, stopped = text.feed(piece)
            if delta:
                send({"t": "text", "id": jid, "text": delta})
            if stopped or guard.looping(piece):
                finish = "stop"
                break
            if produced >= max_tokens:
                break
        else:
            finish = "stop"
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    if finish != "cancelled":
        tail = text.close()
        if tail:
            send({"t": "text", "id": jid, "text": tail})
    send(
        {
            "t": "done",
            "id": jid,
            "finish": finish,
            "prompt_tokens": len(tokens),
            "completion_tokens": produced,
            "seconds": round(time.monotonic() - started, 6),
        }
    )


def self_test(engine: Engine) -> dict[str, Any]:
    """One short greedy generation: proves the model's compute paths run on this CPU (a build or
    buffer type that faults does so here, at start, not on a user's first request)."""
    tokens = engine.tokenize("The harbour at dawn", bos=True, special=False)
    sampling = Sampling(0.0, 1.0, 1, 0.0, 0.0, 0.0, 1.0, 0)
    started = time.monotonic()
    pieces: list[bytes] = []
    for piece in engine.generate(tokens, sampling):
        pieces.append(piece)
        if len(pieces) >= 4:
            break
    seconds = time.monotonic() - started
    return {
        "tokens": len(pieces),
        "seconds": round(seconds, 4),
        "text": b"".join(pieces).decode("utf-8", "replace"),
    }


class JobLoop:
    """The worker's two threads: a reader taking frames off the channel (jobs go to a queue, cancels
    take effect at once), and the caller's thread running jobs one at a time."""

    def __init__(self, engine: Engine, inp: IO[bytes], send: Send) -> None:
        self.engine = engine
        self.inp = inp
        self.send = send
        self.jobs: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._cancelled: set[int] = set()
        self._lock = threading.Lock()
        self.eof = threading.Event()

    def _read(self) -> None:
        try:
            while True:
                message = read_frame(self.inp)
                if message is None:
                    break
                kind = message.get("t")
                if kind == "run":
                    self.jobs.put(message)
                elif kind == "cancel":
                    with self._lock:
                        self._cancelled.add(int(message["id"]))
                elif kind == "stop":
                    break
        except (OSError, ValueError):
            pass
        self.eof.set()
        self.jobs.put(None)

    def _is_cancelled(self, jid: int) -> bool:
        if self.eof.is_set():
            return True
        with self._lock:
            return jid in self._cancelled

    def serve(self) -> None:
        threading.Thread(target=self._read, name="shipyard-worker-reader", daemon=True).start()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            jid = int(job["id"])
            try:
                if self._is_cancelled(jid):
                    nothing = {"prompt_tokens": 0, "completion_tokens": 0, "seconds": 0.0}
                    self.send({"t": "done", "id": jid, "finish": "cancelled", **nothing})
                else:
                    run_job(self.engine, job, self.send, functools.partial(self._is_cancelled, jid))
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
                self.send({"t": "error", "id": jid, "kind": "failed", "message": failure})
            finally:
                with self._lock:
                    self._cancelled.discard(jid)


# -- the process ------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the gateway dies, even mid native call."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def main() -> int:
    # The channel: a private duplicate of stdout; fd 1 then points at stderr (native prints).
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gateway's to handle
    _die_with_parent()
    send = Sender(channel)
    inp = sys.stdin.buffer
    init = read_frame(inp)
    if init is None or init.get("t") != "init":
        return 2
    options: dict[str, Any] = init["options"]
    try:
        factory = options.get("engine_factory")
        if factory:
            send({"t": "loading", "repack": None, "system": ""})
            engine = load_factory(str(factory), options)
        else:
            try:
                info = system_info()
            except ImportError:
                send({"t": "fail", "message": "llama-cpp-python is not installed", "kind": "missing"})
                return 3
            repack = resolve_repack(str(options.get("cpu_repack", "auto")), info)
            send({"t": "loading", "repack": repack, "system": info})
            engine = load_llama(options, repack)
        test = self_test(engine) if init.get("self_test", True) else None
    except Exception as exc:
        send({"t": "fail", "message": f"{type(exc).__name__}: {exc}", "kind": "load"})
        return 3
    send(
        {
            "t": "hello",
            "pid": os.getpid(),
            "n_ctx": engine.n_ctx,
            "n_vocab": engine.n_vocab,
            "describe": engine.describe(),
            "template": engine.template(),
            "self_test": test,
        }
    )
    JobLoop(engine, inp, send).serve()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
