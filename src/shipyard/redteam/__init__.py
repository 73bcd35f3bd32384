"""Red-team runs: generate attacks, send them to a route, judge each answer, report the rates.

``shipyard redteam --route R`` (:mod:`shipyard.cli.redteam`) drives this package. It calls models
through the gateway as a client would, so it sits beside ``evals/``, above the gateway and the
guards it measures:

1. **Generate** (:mod:`.generate`): each built-in family (:mod:`.families`: seed templates, OWASP
   category, goal) gives attacks that take one seed, a unique marker (``PWNED-3fa91c``) and zero to
   two mutations (:mod:`.mutations`: case, synonyms, translation, story frame, padding, wrapper,
   split across turns, leetspeak, homoglyphs, zero-width characters, base64). One
   ``random.Random`` per family and seed makes a run reproducible. :mod:`.corpus` adds a user's
   own attacks (JSONL or plain text).
2. **Plant** (:mod:`.planted`): unless told otherwise the run sends its own system message with a
   canary token and a fictional customer record, so leaks can be judged exactly.
3. **Run** (:mod:`.runner` over :mod:`.targets`): in process through the gateway service (guards
   on, as the route is configured) or over HTTP against a running gateway with the official
   ``openai`` client. A guard that blocks (400 ``guard_blocked`` / 422 ``guard_blocked_output``)
   defeats the attack; the scanner is read from the error.
4. **Judge** (:mod:`.judge`): any leak — canary, planted PII, ``--secret`` values, or verbatim
   overlap with the system prompt — is a success for every family; marker families also succeed
   when the answer contains the marker and is not a refusal.
5. **Report** (:mod:`.summary`, :mod:`.report`): attack success rate (ASR) overall, by family and
   by OWASP category, blocks by scanner, examples; ``report.json``, ``report.md``, ``report.html``
   (a Jinja2 template with Plotly.js inlined from the installed ``plotly`` package: no CDN) and
   ``results.jsonl``.

The names below are the package's public surface; :mod:`.core` holds what every module shares.
"""

from __future__ import annotations

from shipyard.redteam.core import CUSTOM, GOALS, OUTCOMES, Attack, RedteamAborted, RedteamError
from shipyard.redteam.corpus import load_corpus
from shipyard.redteam.families import FAMILIES, OWASP_ALL, FamilySpec
from shipyard.redteam.generate import family_names, generate, parse_families
from shipyard.redteam.judge import Judge, Verdict
from shipyard.redteam.planted import Planted
from shipyard.redteam.report import figures, pct, render_html, render_markdown, write_report
from shipyard.redteam.runner import Result, run_attacks, run_one
from shipyard.redteam.summary import parse_rate, run_metrics, summarize, visible
from shipyard.redteam.targets import AttackFailed, Blocked, GatewayTarget, HttpTarget, Target

__all__ = [
    "CUSTOM",
    "FAMILIES",
    "GOALS",
    "OUTCOMES",
    "OWASP_ALL",
    "Attack",
    "AttackFailed",
    "Blocked",
    "FamilySpec",
    "GatewayTarget",
    "HttpTarget",
    "Judge",
    "Planted",
    "RedteamAborted",
    "RedteamError",
    "Result",
    "Target",
    "Verdict",
    "family_names",
    "figures",
    "generate",
    "load_corpus",
    "parse_families",
    "parse_rate",
    "pct",
    "render_html",
    "render_markdown",
    "run_attacks",
    "run_metrics",
    "run_one",
    "summarize",
    "visible",
    "write_report",
]
