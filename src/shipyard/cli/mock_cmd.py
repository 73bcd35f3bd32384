"""`shipyard mock-upstream`: serve a fake OpenAI-compatible API (for labs, tests, benchmarks)."""

from __future__ import annotations

import typer

from shipyard.cli.common import console


def mock_upstream(
    port: int = typer.Option(9100, "--port", "-p", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    latency_ms: float = typer.Option(
        0.0, "--latency-ms", min=0, help="Delay before each answer / first chunk."
    ),
    tokens_per_s: float = typer.Option(0.0, "--tokens-per-s", min=0, help="Streaming pace (0 = no pacing)."),
    output_tokens: int = typer.Option(16, "--output-tokens", min=1, help="Length of generated answers."),
    answer: str = typer.Option(
        None, "--answer", help="Fixed answer text (the mock provider's `output`).", show_default=False
    ),
    # --output names an output file everywhere else; the answer text had that name first.
    output: str = typer.Option(None, "--output", hidden=True, help="Old spelling of --answer."),
    error_rate: float = typer.Option(
        0.0, "--error-rate", min=0, max=1, help="Fraction of requests that fail."
    ),
    error_status: int = typer.Option(
        500, "--error-status", min=400, max=599, help="HTTP status of failures."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the failure sequence."),
) -> None:
    """Serve a deterministic fake OpenAI-compatible upstream. Point a route's `openai` provider at
    it (base_url http://HOST:PORT/v1) to try fallbacks, timeouts and load tests with no model."""
    import uvicorn

    from shipyard.providers.mock import MockOptions
    from shipyard.providers.mock_upstream import MockUpstream

    opts = MockOptions(
        latency_ms=latency_ms,
        tokens_per_s=tokens_per_s,
        output_tokens=output_tokens,
        output=answer if answer is not None else output,
        error_rate=error_rate,
        error_status=error_status,
        seed=seed,
        keep_received=0,
    )
    console.print(
        f"mock upstream on http://{host}:{port}/v1 (latency {latency_ms:g} ms, error rate {error_rate:g})"
    )
    uvicorn.run(
        MockUpstream(opts), host=host, port=port, log_level="warning", access_log=False, server_header=False
    )
