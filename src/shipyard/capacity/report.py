"""The plan as files: plan.json, plan.md and a self-contained plan.html with SVG plots (matplotlib,
no script: the dashboard serves reports under a CSP without scripts). Every value that comes from
input (a model name from a config.json, a file path) is escaped by Jinja2's autoescape."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import jinja2
import matplotlib
import orjson
from markupsafe import Markup
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from shipyard.capacity.formulas import RANGE
from shipyard.capacity.models import GIB
from shipyard.capacity.planner import Plan, assumptions

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_NS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_META = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(fig: Figure) -> Markup:
    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shipyard-plan"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = _NS.sub("", _META.sub("", _PROLOG.sub("", buf.getvalue(), count=1)))
    prefix = "p" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    svg = svg.replace(' id="', f' id="{prefix}').replace("url(#", f"url(#{prefix}")
    svg = svg.replace('xlink:href="#', f'xlink:href="#{prefix}').replace(' href="#', f' href="#{prefix}')
    fig.clear()
    # Drawn here from numbers and catalogue names (labels pass through matplotlib's SVG writer,
    # which escapes text), never raw input: safe to inline.
    return Markup(svg.replace("<svg ", '<svg class="plot" role="img" ', 1).strip())  # noqa: S704


def _label(text: str) -> str:
    return text.replace("$", r"\$")[:40]


def memory_plot(plan: Plan) -> Markup:
    """Per device that fits: weights, reserve and KV pool per replica, against its memory."""
    fits = [p for p in plan.devices if p.fits]
    fig = Figure(figsize=(6.5, 0.5 + 0.45 * max(1, len(fits))))
    ax = fig.add_subplot()
    for i, p in enumerate(fits):
        weights = plan.model.weight_bytes / GIB
        reserve = p.reserve_bytes * p.tp / GIB
        pool = p.kv_pool_bytes / GIB
        left = 0.0
        for j, (value, name) in enumerate(((weights, "weights"), (reserve, "reserve"), (pool, "KV pool"))):
            ax.barh(i, value, left=left, color=_PALETTE[j], label=name if i == 0 else None)
            left += value
    ax.set_yticks(range(len(fits)), [_label(f"{p.device.name} ×{p.tp}") for p in fits])
    ax.invert_yaxis()
    ax.set_xlabel("GiB per replica")
    ax.set_title("Memory per replica")
    if fits:
        ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def throughput_plot(plan: Plan) -> Markup:
    """Decode tokens/s against batch size (expected efficiencies), per device that fits."""
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot()
    for i, p in enumerate(x for x in plan.devices if x.fits):
        if not p.curve:
            continue
        ax.plot([b for b, _ in p.curve], [t for _, t in p.curve], marker="o", ms=3, color=_PALETTE[i % 8],
                label=_label(f"{p.device.name} ×{p.tp}"))  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequences decoded together (batch)")
    ax.set_ylabel("decode tokens/s per replica")
    ax.set_title("Decode throughput bound")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


_MD = """# Capacity plan: {{ m.name }}

Created {{ plan.created }} by `shipyard plan`. Estimates from the model's architecture and the
hardware's published figures, not measurements; docs/plan.md explains every assumption.

## Model

{{ m.total_params | num }} parameters{% if m.experts > 1 %} ({{ m.active_params | num }} active per token){% endif %},
{{ m.layers }} layers, hidden {{ m.hidden }}, {{ m.heads }} heads / {{ m.kv_heads }} KV heads × {{ m.head_dim }},
vocabulary {{ m.vocab | num }}, weights {{ m.dtype }}, KV cache {{ m.kv_dtype }}. Source: {{ m.source }}

| figure | formula | numbers |
|---|---|---|
{% for s in m.formulas %}
| {{ s.name }} | {{ s.formula }} | {{ s.plugged }} |
{% endfor %}

## Workload

{{ w.input_tokens }} input + {{ w.output_tokens }} output tokens per request, context {{ w.context }}{% if w.rps %}, {{ w.rps }} requests/s{% endif %}{% if w.ttft_p95_ms %}, TTFT p95 ≤ {{ w.ttft_p95_ms }} ms{% endif %}{% if w.tpot_ms %}, ≤ {{ w.tpot_ms }} ms per output token{% endif %} ({{ w.source }}).

## Per device

| device | tp | KV pool | max seqs | tok/s, 1 seq | tok/s, batch | TTFT ms | ITL ms | req/s per replica | devices | USD/month |
|---|---|---|---|---|---|---|---|---|---|---|
{% for d in devices %}
{% if d.fits %}
| {{ d.device }} | {{ d.tensor_parallel }} | {{ (d.kv_pool_bytes / gib) | round(2) }} GiB | {{ d.max_sequences_workload }} | {{ d.single_stream_tokens_per_s | rng(1) }} | {{ d.decode_tokens_per_s | rng(0) }} @{{ d.batch }} | {{ d.ttft_ms | rng(0) }} | {{ d.itl_ms | rng(1) }} | {{ d.requests_per_s_per_replica | round(3) }} | {{ d.devices if d.devices is not none else "—" }} | {{ d.monthly_usd | money }} |
{% else %}
| {{ d.device }} | — | — | — | — | — | — | — | — | — | does not fit: {{ d.reason }} |
{% endif %}
{% endfor %}

Recommendation (cheapest that fits{% if w.ttft_p95_ms or w.tpot_ms %} and meets the targets{% endif %}): {{ rec or "none" }}

{% for d in devices if d.fits %}
### Formulas: {{ d.device }}

{{ d.spec_source }}{% if d.get("measured") %} ({{ d.get("measured") }}){% endif %}. Price: {{ d.price_usd_h if d.price_usd_h is not none else "none" }} USD/h ({{ d.price_source }}).
{% for n in d.target_notes %}
- {{ n }}
{% endfor %}

| step | formula | numbers |
|---|---|---|
{% for s in d.formulas %}
| {{ s.name }} | {{ s.formula }} | {{ s.plugged }} |
{% endfor %}

{% endfor %}
## Assumptions

{% for k, v in assumptions.items() %}
- {{ k }}: {{ v }}
{% endfor %}
"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Capacity plan: {{ m.name }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.2rem;font-size:13px}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.dim{color:#777} svg.plot{max-width:100%;height:auto;display:block;margin:.5rem 0}
code{background:#f4f4f4;padding:0 .2rem}
</style></head><body>
<h1>Capacity plan: {{ m.name }}</h1>
<p class="dim">Created {{ plan.created }} by <code>shipyard plan</code>. Estimates from the model's architecture
and the hardware's published figures, not measurements.</p>
<h2>Model</h2>
<p>{{ m.total_params | num }} parameters{% if m.experts > 1 %} ({{ m.active_params | num }} active){% endif %},
{{ m.layers }} layers, {{ m.heads }} heads / {{ m.kv_heads }} KV heads × {{ m.head_dim }}, weights {{ m.dtype }},
KV cache {{ m.kv_dtype }}. Source: {{ m.source }}</p>
<table><tr><th>figure</th><th>formula</th><th>numbers</th></tr>
{% for s in m.formulas %}<tr><td>{{ s.name }}</td><td>{{ s.formula }}</td><td>{{ s.plugged }}</td></tr>
{% endfor %}</table>
<h2>Workload</h2>
<p>{{ w.input_tokens }} input + {{ w.output_tokens }} output tokens per request, context {{ w.context }}{% if w.rps %},
{{ w.rps }} requests/s{% endif %}{% if w.ttft_p95_ms %}, TTFT p95 ≤ {{ w.ttft_p95_ms }} ms{% endif %}{% if w.tpot_ms %},
≤ {{ w.tpot_ms }} ms per output token{% endif %} ({{ w.source }}).</p>
<h2>Per device</h2>
<table><tr><th>device</th><th>tp</th><th>KV pool GiB</th><th>max seqs</th><th>tok/s, 1 seq</th><th>tok/s, batch</th>
<th>TTFT ms</th><th>ITL ms</th><th>req/s per replica</th><th>devices</th><th>USD/month</th></tr>
{% for d in devices %}{% if d.fits %}<tr><td>{{ d.device }}</td><td class="n">{{ d.tensor_parallel }}</td>
<td class="n">{{ (d.kv_pool_bytes / gib) | round(2) }}</td><td class="n">{{ d.max_sequences_workload }}</td>
<td class="n">{{ d.single_stream_tokens_per_s | rng(1) }}</td><td class="n">{{ d.decode_tokens_per_s | rng(0) }} @{{ d.batch }}</td>
<td class="n">{{ d.ttft_ms | rng(0) }}</td><td class="n">{{ d.itl_ms | rng(1) }}</td>
<td class="n">{{ d.requests_per_s_per_replica | round(3) }}</td><td class="n">{{ d.devices if d.devices is not none else "—" }}</td>
<td class="n">{{ d.monthly_usd | money }}</td></tr>
{% else %}<tr class="dim"><td>{{ d.device }}</td><td colspan="10">does not fit: {{ d.reason }}</td></tr>{% endif %}
{% endfor %}</table>
<p>Recommendation: <b>{{ rec or "none" }}</b></p>
{{ memory_svg }}
{{ throughput_svg }}
{% for d in devices if d.fits %}<h3>Formulas: {{ d.device }}</h3>
<p class="dim">{{ d.spec_source }}{% if d.get("measured") %} ({{ d.get("measured") }}){% endif %}. Price:
{{ d.price_usd_h if d.price_usd_h is not none else "none" }} USD/h ({{ d.price_source }}).</p>
{% if d.target_notes %}<ul>{% for n in d.target_notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>step</th><th>formula</th><th>numbers</th></tr>
{% for s in d.formulas %}<tr><td>{{ s.name }}</td><td>{{ s.formula }}</td><td>{{ s.plugged }}</td></tr>
{% endfor %}</table>
{% endfor %}
<h2>Assumptions</h2><ul>{% for k, v in assumptions.items() %}<li>{{ k }}: {{ v }}</li>{% endfor %}</ul>
</body></html>
"""


def _rng(d: dict[str, float], digits: int = 0) -> str:
    values = [float(v) for v in d.values()]
    return f"{min(values):,.{digits}f}–{max(values):,.{digits}f}"


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        autoescape=autoescape, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    env.filters.update(
        num=lambda n: f"{n:,}",
        rng=_rng,
        money=lambda v: "—" if v is None else f"{v:,.0f}",
    )
    return env


def _md_cell(value: object) -> object:
    """Markdown table cells: a `|` in a name or path would split the cell."""
    return value.replace("|", "\\|").replace("\n", " ") if isinstance(value, str) else value


def _clean(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return _md_cell(obj)


def write_report(plan: Plan, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = plan.as_dict()
    ctx = {
        "plan": plan,
        "m": data["model"],
        "w": data["workload"],
        "devices": data["devices"],
        "rec": data["recommendation"],
        "assumptions": assumptions(),
        "gib": GIB,
        "range": RANGE,
    }
    md_ctx = {**ctx, **{k: _clean(ctx[k]) for k in ("m", "w", "devices", "assumptions")}}
    paths = [directory / "plan.json", directory / "plan.md", directory / "plan.html"]
    paths[0].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    paths[1].write_text(_env(False).from_string(_MD).render(md_ctx))
    html = (
        _env(True)
        .from_string(_HTML)
        .render({**ctx, "memory_svg": memory_plot(plan), "throughput_svg": throughput_plot(plan)})
    )
    paths[2].write_text(html)
    return paths
