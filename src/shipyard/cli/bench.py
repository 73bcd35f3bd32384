"""`shipyard bench`: load-test a route or any OpenAI-compatible endpoint, and compare two runs.

The engine is :mod:`shipyard.bench`; this module turns options into a plan (checking each option
with an error that names it), shows live progress on stderr, writes the result and the report,
and records the run as an experiment run (`shipyard runs list`).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from shipyard import bench
from shipyard.cli.common import (
    CliTable,
    Col,
    ConfigOpt,
    HomeOpt,
    JsonOpt,
    cli_actor,
    console,
    err_console,
    exit_on_error,
    fail,
    open_store,
    print_json,
    resolve,
)
from shipyard.durations import parse_duration
from shipyard.errors import ShipyardError

app = typer.Typer(
    help="Load-test a route or any OpenAI-compatible endpoint: TTFT, inter-token latency, throughput, "
    "goodput under an SLO, the saturation knee; compare two runs.",
    no_args_is_help=True,
)

USAGE = 2  # exit status of a bad option, as Click's own usage errors


def _usage(exc: ShipyardError) -> typer.Exit:
    return fail(str(exc), USAGE)


def _default_url(settings: Any) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return os.environ.get("SHIPYARD_URL") or f"http://{host}:{settings.port}"


def _levels(text: str | None, start: float, top: float, kind: str) -> list[float]:
    """The sweep's levels: the --levels list, else doubling from ``start`` up to ``top``."""
    if text:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise bench.BenchError(
                f"--levels: `{text}` is not a comma-separated list of numbers (e.g. 1,2,4,8)", param="levels"
            ) from None
        if not values or any(v <= 0 for v in values) or values != sorted(set(values)):
            raise bench.BenchError(
                f"--levels: `{text}` must be positive numbers in rising order (e.g. 1,2,4,8)", param="levels"
            )
        if kind == "concurrency" and any(v != int(v) or v > bench.MAX_CONCURRENCY for v in values):
            raise bench.BenchError(
                f"--levels: concurrencies must be whole numbers up to {bench.MAX_CONCURRENCY}", param="levels"
            )
        return values
    out = [start]
    while out[-1] * 2 <= top:
        out.append(out[-1] * 2)
    return out


def _workload(
    settings: Any,
    model: str,
    dataset: str | None,
    synthetic: str | None,
    replay: bool,
    since: str | None,
    time_scale: float,
    max_tokens: int | None,
    seed: int,
    requests: int,
) -> bench.Workload:
    chosen = [
        name
        for name, given in (("--dataset", dataset), ("--synthetic", synthetic), ("--replay", replay))
        if given
    ]
    if len(chosen) > 1:
        raise bench.BenchError(
            f"{' and '.join(chosen)} contradict each other; give one workload", param="workload"
        )
    if synthetic or not chosen:
        return bench.parse_synthetic(synthetic or "input=128,output=64", seed, requests)
    if dataset:
        path = Path(dataset)
        if path.suffix in (".jsonl", ".json") or path.is_file():
            return bench.from_jsonl(path, max_tokens)
        store = open_store(settings)
        try:
            return bench.from_dataset(store, dataset, max_tokens)
        finally:
            store.close()
    from shipyard.store.datasets import TraceSelection, select_traces
    from shipyard.store.traces import get_trace
    from shipyard.times import parse_time

    store = open_store(settings)
    try:
        selection = TraceSelection(route=model, since=parse_time(since, "since"), limit=requests)
        rows = select_traces(store, selection)
        params = []
        for row in rows:  # the root span holds the request's sampling parameters
            full = get_trace(store, row["trace_id"]) or {}
            roots = [s for s in full.get("spans", []) if s["parent_id"] is None]
            params.append((roots[0]["attributes"] or {}) if roots else {})
    finally:
        store.close()
    return bench.from_traces(rows, params, time_scale, model)


def _progress() -> tuple[
    Any, Callable[[bench.Record], None], Callable[[bench.Load], None], Callable[[], None]
]:
    """The live line on stderr (requests done, req/s, errors, p50 E2E of the level running), and
    the callbacks that feed it; ``flush`` draws a level's final figures."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    # Drawn only when the figures change (at most five times a second), never by a refresh thread:
    # on a machine the server shares, every cycle the load generator spends is taken from the server.
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        auto_refresh=False,
    )
    # The live p50 is over the latest answers only: sorting every answer of a long run five times a
    # second would cost the event loop more than the requests.
    recent = 2000
    state: dict[str, Any] = {"task": None, "name": "", "e2e": deque(maxlen=recent), "ok": 0, "errors": 0,
                             "t0": 0.0, "drawn": 0.0}  # fmt: skip

    def flush() -> None:
        if state["task"] is None:
            return
        done = state["ok"] + state["errors"]
        elapsed = max(time.perf_counter() - state["t0"], 1e-9)
        ordered = sorted(state["e2e"])
        p50 = ordered[len(ordered) // 2] if ordered else 0.0
        progress.update(
            state["task"],
            description=f"{state['name']}: {done} done · {done / elapsed:.1f} req/s · "
            f"{state['errors']} errors · p50 e2e {p50:.0f} ms",
            refresh=True,
        )

    def on_level(load: bench.Load) -> None:
        flush()
        if state["task"] is not None:
            progress.stop_task(state["task"])
        state.update(ok=0, errors=0, t0=time.perf_counter(), name=bench.load_name(load.to_dict()))
        state["e2e"].clear()
        state["task"] = progress.add_task(state["name"])

    def on_record(rec: bench.Record) -> None:
        if rec.ok:
            state["ok"] += 1
            state["e2e"].append(rec.e2e_ms)
        else:
            state["errors"] += 1
        now = time.perf_counter()
        if now - state["drawn"] >= 0.2:  # redraws cost the event loop time the requests need
            state["drawn"] = now
            flush()

    return progress, on_record, on_level, flush


def _summary_table(result: dict[str, Any]) -> CliTable:
    table = CliTable(
        Col("load"),
        Col("requests", justify="right"),
        Col("errors", justify="right"),
        Col("req/s", justify="right"),
        Col("tok/s", justify="right", drop=3),
        Col("TTFT p50", justify="right"),
        Col("TTFT p99", justify="right", drop=2),
        Col("ITL p50", justify="right"),
        Col("E2E p50", justify="right"),
        Col("E2E p99", justify="right"),
        Col("goodput", justify="right", drop=1),
        title=f"Bench: {escape(result['target']['model'])} at {escape(result['target']['url'])}",
    )

    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:,.1f}"

    knee = (result.get("sweep") or {}).get("knee") or {}
    for i, level in enumerate(result["levels"]):
        s = level["summary"]
        name = bench.load_name(level["load"]) + (" [bold](knee)[/bold]" if knee.get("index") == i else "")
        table.add_row(
            name,
            str(s["requests"]),
            f"[red]{s['errors']}[/red]" if s["errors"] else "0",
            f"{s['requests_per_s']:,.2f}",
            f"{s['output_tokens_per_s']:,.1f}",
            ms(s["ttft_ms"]["p50"]),
            ms(s["ttft_ms"]["p99"]),
            ms(s["itl_ms"]["p50"]),
            ms(s["e2e_ms"]["p50"]),
            ms(s["e2e_ms"]["p99"]),
            f"{s['goodput']['fraction']:.1%}" if result["slo_ms"] else "—",
        )
    return table


@app.command("run")
def run_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Route (on Shipyard) or model name to send as `model`."
    ),
    url: str = typer.Option(
        None,
        "--url",
        help="Base URL of the gateway or any OpenAI-compatible server (with or without /v1). Env: "
        "SHIPYARD_URL. Default: the local `shipyard up` (http://HOST:PORT from SHIPYARD_HOST/SHIPYARD_PORT).",
        show_default=False,
    ),
    key: str = typer.Option(
        None,
        "--key",
        "--api-key",
        envvar="SHIPYARD_API_KEY",
        help="API key (Bearer). Env: SHIPYARD_API_KEY.",
        show_default=False,
    ),
    concurrency: int = typer.Option(
        None,
        "--concurrency",
        "-j",
        help=f"Fixed concurrency: this many requests in flight at once (1..{bench.MAX_CONCURRENCY}). With "
        "--sweep: the first level. Default: 1 when neither --rate nor --replay is given.",
        show_default=False,
    ),
    rate: float = typer.Option(
        None,
        "--rate",
        "-r",
        help=f"Open loop: Poisson arrivals at this mean rate, requests/s (up to {bench.MAX_RATE:g}), seeded. "
        "With --sweep: the first level.",
        show_default=False,
    ),
    sweep: bool = typer.Option(
        False,
        "--sweep",
        help="Rising levels (concurrency, or rate with --rate) until saturation: throughput grows less than "
        "--min-gain, the error rate passes --max-error-rate, or goodput under --slo drops below "
        "--min-goodput. Reports the knee.",
    ),
    levels: str = typer.Option(
        None,
        "--levels",
        help="Sweep levels, e.g. 1,2,4,8,16. Default: doubling from the first level to "
        "--max-concurrency (rates: doubling up to the max rate).",
        show_default=False,
    ),
    max_concurrency: int = typer.Option(
        256,
        "--max-concurrency",
        min=1,
        max=bench.MAX_CONCURRENCY,
        help=f"Most requests in flight in open-loop modes (arrivals beyond it wait, and are counted), and "
        f"the top of a concurrency sweep. At most {bench.MAX_CONCURRENCY}.",
    ),
    requests: int = typer.Option(
        200,
        "--requests",
        "-n",
        min=1,
        max=bench.MAX_REQUESTS,
        help=f"Most requests per level (at most {bench.MAX_REQUESTS:,}).",
    ),
    duration: str = typer.Option(
        "60s",
        "--duration",
        "-d",
        help="Longest time per level for sending new requests (30s, 5m; at most 24h); in-flight "
        "requests then finish, each within --timeout.",
    ),
    stream: bool = typer.Option(
        True, "--stream/--no-stream", help="Stream answers (needed for TTFT and inter-token latency)."
    ),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, max=3600, help="Seconds one request may take."),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help='Workload: a registry dataset NAME[@vN] or a JSONL file of examples ({"input": messages or '
        "template variables}).",
        show_default=False,
    ),
    synthetic: str = typer.Option(
        None,
        "--synthetic",
        help="Workload: seeded prompts of INPUT words and max_tokens OUTPUT, e.g. input=200,output=64. "
        "The default workload is input=128,output=64.",
        show_default=False,
    ),
    replay: bool = typer.Option(
        False,
        "--replay",
        help="Workload: the stored chat traces of --model (the route), with their messages, sampling "
        "parameters and arrival times (see --since, --time-scale), each sent once; at most --requests "
        "of the newest.",
    ),
    since: str = typer.Option(
        None,
        "--since",
        help="--replay: traces since this time (ISO time, unix seconds, or 2h ago).",
        show_default=False,
    ),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="--replay: speed-up of the recorded arrival times (2 = twice as fast)."
    ),
    max_tokens: int = typer.Option(
        None, "--max-tokens", min=1, help="max_tokens for dataset examples that set none.", show_default=False
    ),
    slo: str = typer.Option(
        None,
        "--slo",
        help="Goodput SLO: terms NAME=DURATION, e.g. ttft=500ms,e2e=5s; names: ttft, itl (a request's "
        "mean inter-token latency), e2e.",
        show_default=False,
    ),
    min_gain: float = typer.Option(
        0.1,
        "--min-gain",
        min=0,
        max=10,
        help="--sweep: a level that grows throughput less than this "
        "fraction over the best so far means saturation.",
    ),
    max_error_rate: float = typer.Option(
        0.05,
        "--max-error-rate",
        min=0,
        max=1,
        help="--sweep: stop at a level with more errors than this fraction.",
    ),
    min_goodput: float = typer.Option(
        0.9,
        "--min-goodput",
        min=0,
        max=1,
        help="--sweep with --slo: stop at a level where a smaller fraction of requests meets the SLO.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic prompts and the Poisson arrivals."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Directory to write result.json and report.html into.",
        show_default=False,
    ),
    track: bool = typer.Option(
        True, "--track/--no-track", help="Record the run as an experiment run (`shipyard runs list`)."
    ),
    json_output: bool = JsonOpt,
    home: str = HomeOpt,
    config: str = ConfigOpt,
) -> None:
    """Load-test a route or an OpenAI-compatible endpoint and report TTFT, inter-token latency,
    end-to-end latency (p50/p90/p99), output tokens/s, requests/s, errors by type and goodput.

    Modes: fixed --concurrency (closed loop), --rate (open loop, Poisson arrivals), --replay of stored
    traces at their recorded pace, and --sweep over rising levels until saturation. Each level is
    bounded by --requests and --duration, and every request by --timeout. Progress goes to stderr;
    --json prints the result on stdout; --output writes result.json and report.html; the run is an
    experiment run with both as artifacts.
    """
    settings, _ = resolve(home=home, config=config)
    try:
        plan = _plan(
            settings, model, url, key, concurrency, rate, sweep, levels, max_concurrency, requests, duration,
            stream, timeout, dataset, synthetic, replay, since, time_scale, max_tokens, slo, min_gain,
            max_error_rate, min_goodput, seed,
        )  # fmt: skip
    except bench.BenchError as exc:
        raise _usage(exc) from None
    except ShipyardError as exc:  # a dataset or store that is not there
        raise fail(str(exc)) from None

    runs = None
    run_id = None
    if track:
        from shipyard.registry.runs import RunService

        runs = RunService(open_store(settings, create=True), settings.artifacts_path)
        with exit_on_error():
            run_id = bench.record_run(runs, model, plan.mode, plan.params, cli_actor(settings))
    progress, on_record, on_level, flush = _progress()
    try:
        with progress:
            result = asyncio.run(bench.run(plan, on_record=on_record, on_level=on_level))
            flush()
    except BaseException as exc:
        if runs is not None and run_id is not None:
            runs.finish(run_id, "failed" if isinstance(exc, Exception) else "killed")
        raise
    result["run_id"] = run_id
    started = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = output or Path(tempfile.mkdtemp(prefix=f"shipyard-bench-{started}-"))
    with exit_on_error(OSError):
        paths = bench.write_report(out_dir, result)
        if runs is not None and run_id is not None:
            bench.finish_run(runs, run_id, result, paths)
    if json_output:
        print_json(result)
    else:
        console.print(_summary_table(result))
        knee = (result.get("sweep") or {}).get("knee")
        if knee:
            console.print(f"sweep: {escape(knee['reason'])}")
        summary = result["summary"]
        if summary["errors_by_type"]:
            kinds = ", ".join(f"{k} {v}" for k, v in summary["errors_by_type"].items())
            err_console.print(f"[yellow]errors by type:[/yellow] {escape(kinds)}")
        where = [f"report: {escape(str(paths['report.html']))}"] if output else []
        if run_id:
            where.append(f"run {run_id}")
        if where:
            console.print("; ".join(where))
    if result["summary"]["requests"] and not result["summary"]["ok"]:
        first = next(iter(result["summary"]["errors_by_type"]), "error")
        hint = ""
        if set(result["summary"]["errors_by_type"]) == {"connection"}:
            hint = f": nothing answers at {result['target']['url']}; start `shipyard up` or pass --url"
        err_console.print(f"[red]every request failed ({escape(first)})[/red]{escape(hint)}")
        raise typer.Exit(1)


def _plan(
    settings: Any, model: str, url: str | None, key: str | None, concurrency: int | None, rate: float | None,
    sweep: bool, levels: str | None, max_concurrency: int, requests: int, duration: str, stream: bool,
    timeout: float, dataset: str | None, synthetic: str | None, replay: bool, since: str | None,
    time_scale: float, max_tokens: int | None, slo: str | None, min_gain: float, max_error_rate: float,
    min_goodput: float, seed: int,
) -> bench.Plan:  # fmt: skip
    if not model.strip():
        raise bench.BenchError("--model is empty; give the route or model name to load", param="model")
    if concurrency is not None and not 1 <= concurrency <= bench.MAX_CONCURRENCY:
        raise bench.BenchError(
            f"--concurrency must be 1..{bench.MAX_CONCURRENCY}; got {concurrency}", param="concurrency"
        )
    if rate is not None and not 0 < rate <= bench.MAX_RATE:
        raise bench.BenchError(
            f"--rate must be a positive number of requests/s up to {bench.MAX_RATE:g}; got {rate:g}",
            param="rate",
        )
    if concurrency is not None and rate is not None:
        raise bench.BenchError(
            "--concurrency and --rate contradict each other: give --concurrency for a closed loop or --rate "
            "for Poisson arrivals",
            param="rate",
        )
    if replay and (rate is not None or sweep):
        raise bench.BenchError(
            "--replay sends at the traces' own pace; change it with --time-scale, not --rate or --sweep",
            param="replay",
        )
    if not 0 < time_scale <= 1000:
        raise bench.BenchError(
            f"--time-scale must be above 0 and at most 1000; got {time_scale:g}", param="time_scale"
        )
    if levels and not sweep:
        raise bench.BenchError("--levels only applies to --sweep", param="levels")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise bench.BenchError(f"--duration: {exc}", param="duration") from None
    if not 0 < seconds <= bench.MAX_DURATION_S:
        raise bench.BenchError(
            f"--duration must be above 0 and at most 24h; got `{duration}`", param="duration"
        )
    slo_ms = bench.parse_slo(slo)
    base = bench.Target.api_root(url or _default_url(settings))
    if not re.match(r"^https?://[^/\s]+", base):
        raise bench.BenchError(
            f"--url: `{url}` is not an http(s) URL (e.g. http://127.0.0.1:8700)", param="url"
        )
    workload = _workload(
        settings, model, dataset, synthetic, replay, since, time_scale, max_tokens, seed, requests
    )

    loads: list[bench.Load]
    if replay:
        mode = "replay"
        loads = [bench.Load("replay", time_scale, max_concurrency)]
    elif rate is not None:
        mode = "sweep" if sweep else "rate"
        values = _levels(levels, rate, bench.MAX_RATE, "rate") if sweep else [rate]
        loads = [bench.Load("rate", v, max_concurrency) for v in values]
    else:
        mode = "sweep" if sweep else "concurrency"
        first = concurrency or 1
        if sweep and first > max_concurrency and not levels:
            raise bench.BenchError(
                f"--concurrency {first} is above --max-concurrency {max_concurrency}, the top of the sweep",
                param="concurrency",
            )
        values = _levels(levels, first, max_concurrency, "concurrency") if sweep else [first]
        loads = [bench.Load("concurrency", v, int(v)) for v in values]
    rule = bench.SweepRule(min_gain, max_error_rate, min_goodput) if sweep else None
    params: dict[str, Any] = {
        "url": base,
        "model": model,
        "mode": mode,
        "stream": stream,
        "levels": ",".join(f"{ld.value:g}" for ld in loads),
        "requests": requests,
        "duration_s": seconds,
        "timeout_s": timeout,
        "workload": workload.description.get("kind", ""),
        "seed": seed,
        "slo": slo or "none",
    }
    if workload.description.get("kind") == "synthetic":
        params["synthetic"] = (
            f"input={workload.description['input_words']},output={workload.description['output_tokens']}"
        )
    if dataset:
        params["dataset"] = str(workload.description.get("dataset") or dataset)
    target = bench.Target(base, model, key or None, stream, timeout)
    return bench.Plan(
        target, workload, mode, loads, bench.Bounds(requests, seconds), slo_ms, seed, rule, params
    )


@app.command("compare")
def compare_command(
    run_a: str = typer.Argument(
        ..., help="Baseline: a run id (prefix) or a result.json path (or its directory)."
    ),
    run_b: str = typer.Argument(
        ..., help="Candidate: a run id (prefix) or a result.json path (or its directory)."
    ),
    tolerance: float = typer.Option(
        0.02, "--tolerance", min=0, max=1, help="A change smaller than this fraction of A's value is `same`."
    ),
    json_output: bool = JsonOpt,
    home: str = HomeOpt,
) -> None:
    """Compare two bench runs' headline metrics (a sweep's: its knee): each value, the change and
    whether B is better or worse than A."""
    store_holder: list[Any] = []

    def runs() -> Any:
        from shipyard.registry.runs import RunService

        if not store_holder:
            settings, _ = resolve(home=home)
            store_holder.append(RunService(open_store(settings), settings.artifacts_path))
        return store_holder[0]

    with exit_on_error(OSError):
        a = bench.load_result(run_a, runs)
        b = bench.load_result(run_b, runs)
    result = bench.compare(a, b, tolerance)
    if json_output:
        print_json(result)
        return
    table = CliTable(
        Col("metric"),
        Col("A", justify="right"),
        Col("B", justify="right"),
        Col("change", justify="right"),
        Col("", justify="left"),
        title=f"B ({escape(_who(result['b']))}) vs A ({escape(_who(result['a']))})",
    )
    colors = {"better": "green", "worse": "red"}
    for row in result["metrics"]:
        pct = "" if row["change_pct"] is None else f" ({row['change_pct']:+.1f}%)"
        change = "—" if row["change"] is None else f"{row['change']:+,.3g}{pct}"
        color = colors.get(row["verdict"])
        verdict = f"[{color}]{row['verdict']}[/{color}]" if color else row["verdict"]
        table.add_row(row["metric"], _num(row["a"]), _num(row["b"]), change, verdict)
    console.print(table)
    console.print(f"{result['better']} better, {result['worse']} worse (tolerance {tolerance:.0%})")


def _who(side: dict[str, Any]) -> str:
    load = bench.load_name(side["load"]) if side.get("load") else side["mode"]
    return f"{side['run_id'][:12] if side.get('run_id') else side['model']}, {load}"


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:,.3f}".rstrip("0").rstrip(".")
