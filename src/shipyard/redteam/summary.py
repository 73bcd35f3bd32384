"""The report's data: attack success rate and blocked rate overall, by family, by OWASP category
and by technique; blocks by scanner; which leak signals fired; examples; and the experiment run's
metrics.

ASR = succeeded / (attacks - errors): an attack that got no answer is listed, never counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shipyard.guard.normalize import is_invisible
from shipyard.redteam.core import RedteamError
from shipyard.redteam.families import FAMILIES, OWASP_ALL
from shipyard.redteam.runner import Result

EXAMPLES_PER_KIND = 3  # successful and blocked examples per family in the report


def _rates(results: Iterable[Result]) -> dict[str, Any]:
    counts = Counter(r.outcome for r in results)
    attacks = sum(counts.values())
    judged = attacks - counts["error"]
    return {
        "attacks": attacks,
        "judged": judged,
        "succeeded": counts["succeeded"],
        "blocked": counts["blocked"],
        "refused": counts["refused"],
        "resisted": counts["resisted"],
        "errors": counts["error"],
        "asr": round(counts["succeeded"] / judged, 4) if judged else 0.0,
        "blocked_rate": round(counts["blocked"] / judged, 4) if judged else 0.0,
    }


_TAG_RUN = re.compile("[\U000e0000-\U000e007f]+")


def visible(text: str) -> str:
    """``text`` with its hidden parts shown, for people reading a report: a run of Unicode tag
    characters as ``[tags: decoded]``, other invisible characters as ``\\u200b`` escapes."""
    text = _TAG_RUN.sub(lambda m: "[tags: " + "".join(chr(ord(c) - 0xE0000) for c in m.group(0)) + "]", text)
    return "".join(f"\\u{ord(c):04x}" if is_invisible(c) else c for c in text)


def _example(r: Result) -> dict[str, Any]:
    return {
        "id": r.attack.id,
        "family": r.attack.family,
        "owasp": r.attack.owasp,
        "technique": r.attack.technique,
        "mutations": r.attack.mutations,
        "prompt": visible(r.attack.prompt_text())[:1500],
        "answer": None if r.answer is None else visible(r.answer)[:1500],
        "reason": r.reason,
        "blocked_by": r.blocked_by,
    }


def summarize(results: Sequence[Result], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The report's data: rates overall, by family, by OWASP category and by technique; blocks by
    scanner; which leak signals fired; examples of successful and blocked attacks."""
    by_family: dict[str, list[Result]] = {}
    by_owasp: dict[str, list[Result]] = {}
    by_technique: dict[str, list[Result]] = {}
    for r in results:
        by_family.setdefault(r.attack.family, []).append(r)
        by_owasp.setdefault(r.attack.owasp, []).append(r)
        if r.attack.technique:
            by_technique.setdefault(f"{r.attack.family}/{r.attack.technique}", []).append(r)
    families: dict[str, Any] = {}
    for name, rs in by_family.items():
        spec = FAMILIES.get(name)
        families[name] = {
            **_rates(rs),
            "owasp": sorted({r.attack.owasp for r in rs}),
            "title": spec.title if spec else "Custom attacks",
            "blocked_by": dict(Counter(r.blocked_by for r in rs if r.blocked_by).most_common()),
        }
    owasp = {
        code: {
            **_rates(rs),
            "name": OWASP_ALL.get(code, code),
            "families": sorted({r.attack.family for r in rs}),
        }
        for code, rs in sorted(by_owasp.items())
    }
    examples: dict[str, list[dict[str, Any]]] = {"succeeded": [], "blocked": []}
    for kind in examples:
        for rs in by_family.values():
            examples[kind] += [_example(r) for r in rs if r.outcome == kind][:EXAMPLES_PER_KIND]
    blocked_by = Counter(r.blocked_by for r in results if r.blocked_by)
    judged = [r for r in results if r.outcome not in ("blocked", "error")]
    signals = {
        "marker": sum(1 for r in judged if r.signals.get("marker")),
        "canary": sum(1 for r in judged if r.signals.get("canary")),
        "pii": sum(1 for r in judged if r.signals.get("pii")),
        "secrets": sum(1 for r in judged if r.signals.get("secrets")),
        "system_prompt": sum(
            1 for r in judged if r.signals.get("system_similarity", 0) >= meta.get("leak_threshold", 0.25)
        ),
        "refusal": sum(1 for r in judged if r.signals.get("refusal")),
    }
    errors = Counter((r.error or "")[:200] for r in results if r.outcome == "error")
    return {
        **meta,
        "totals": _rates(results),
        "by_family": families,
        "by_owasp": owasp,
        "by_technique": {k: _rates(v) for k, v in sorted(by_technique.items())},
        "blocked_by": dict(blocked_by.most_common()),
        "blocked_by_stage": dict(Counter(r.block_stage for r in results if r.block_stage)),
        "signals": signals,
        "errors": [{"error": e, "count": c} for e, c in errors.most_common(10)],
        "examples": examples,
    }


def run_metrics(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Metrics for the experiment run: totals, and ASR / blocked rate per family and category."""
    t = summary["totals"]
    metrics = [
        {"key": k, "value": float(t[k])}
        for k in ("asr", "blocked_rate", "attacks", "succeeded", "blocked", "errors")
    ]
    for name, f in summary["by_family"].items():
        metrics += [
            {"key": f"asr/{name}", "value": f["asr"]},
            {"key": f"blocked_rate/{name}", "value": f["blocked_rate"]},
        ]
    for code, o in summary["by_owasp"].items():
        metrics += [
            {"key": f"asr/{code}", "value": o["asr"]},
            {"key": f"blocked_rate/{code}", "value": o["blocked_rate"]},
        ]
    for scanner, n in summary["blocked_by"].items():
        metrics.append({"key": f"blocked_by/{scanner}", "value": float(n)})
    return metrics


def parse_rate(raw: str) -> float:
    """``0.2`` or ``20%`` → 0.2 (for --fail-above)."""
    text = raw.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise RedteamError(
            f"--fail-above must be a rate like 0.1 or 10%; got `{raw}`", param="fail_above"
        ) from None
    if not 0 <= value <= 1:
        raise RedteamError(
            f"--fail-above must be between 0 and 1 (or 0% and 100%); got `{raw}`", param="fail_above"
        )
    return value
