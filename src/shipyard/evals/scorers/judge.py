"""Model-graded scoring: an LLM judge reached through a gateway route grades the output against a
rubric, with a binary verdict per sample and a majority over samples."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from shipyard.content import content_text
from shipyard.errors import ShipyardError
from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import BaseScorer, clip, one_line
from shipyard.registry.prompts import Prompt, check_templates, variables_of

DEFAULT_JUDGE_PROMPT = """\
You are a strict, impartial grader. Decide whether the OUTPUT of an AI system meets the RUBRIC.

RUBRIC:
{{ rubric }}

INPUT given to the system:
<input>
{{ input }}
</input>
{% if expected %}
EXPECTED ANSWER (a reference; the output need not match it word for word):
<expected>
{{ expected }}
</expected>
{% endif %}
OUTPUT to grade:
<output>
{{ output }}
</output>

Reply with one short sentence of reasoning, then a final line that is exactly \
"VERDICT: {{ pass_label }}" if the output meets the rubric, or "VERDICT: {{ fail_label }}" if it does not.
"""

JUDGE_VARIABLES = ("rubric", "input", "expected", "output", "pass_label", "fail_label")


class LlmJudgeOptions(ScorerOptions):
    route: str = Field(description="Gateway route of the judge model.")
    rubric: str = Field(description="What a good output does, in words the judge can check.")
    samples: int = Field(
        1,
        ge=1,
        le=25,
        description="Judge answers per case; the majority decides (an odd number avoids ties).",
    )
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="Judge sampling temperature; default 0 for one sample and 0.7 for several "
        "(identical samples would make the vote pointless).",
    )
    max_tokens: int | None = Field(None, ge=1, description="Cap on each judge answer; default: the route's.")
    pass_label: str = Field("PASS", description="Verdict word for an output that meets the rubric.")
    fail_label: str = Field("FAIL", description="Verdict word for an output that does not.")
    prompt: str | None = Field(
        None,
        description="Custom judge prompt (Jinja2, sent as one user message) using any of "
        "`{{ rubric }}`, `{{ input }}`, `{{ expected }}` (empty when the case has none), `{{ output }}`, "
        "`{{ pass_label }}`, `{{ fail_label }}`; it must ask for a last line `VERDICT: <label>`.",
    )
    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A case passes when the share of pass votes among valid votes >= this (at 0.5 a "
        "tie passes; use an odd `samples` to avoid ties).",
    )

    @field_validator("pass_label", "fail_label")
    @classmethod
    def _label(cls, label: str) -> str:
        label = label.strip()
        if not label or "\n" in label:
            raise ValueError("must be a non-empty single-line word")
        return label

    @field_validator("prompt")
    @classmethod
    def _template(cls, prompt: str | None) -> str | None:
        if prompt is None:
            return None
        messages = [{"role": "user", "content": prompt}]
        problems = check_templates(messages)
        if problems:
            raise ValueError(problems[0].removeprefix("messages[0].content: "))
        unknown = [v for v in variables_of(messages) if v not in JUDGE_VARIABLES]
        if unknown:
            raise ValueError(
                f"unknown variable(s) {', '.join(unknown)}; "
                f"the judge prompt can use {', '.join(JUDGE_VARIABLES)}"
            )
        return prompt

    @model_validator(mode="after")
    def _distinct_labels(self) -> LlmJudgeOptions:
        if self.pass_label.casefold() == self.fail_label.casefold():
            raise ValueError("`pass_label` and `fail_label` must differ")
        return self


def parse_verdict(answer: str, pass_label: str = "PASS", fail_label: str = "FAIL") -> bool | None:
    """True for pass, False for fail, None when the answer gives no clear verdict (an abstention).

    Accepted: a ``VERDICT: <label>`` anywhere (markdown, quotes or JSON around it are fine; the last
    one wins, as models sometimes restate the format before answering), else a last line that is just
    a label. A line that names both labels (an echo of the instructions) is not a verdict.
    """
    labels = f"({re.escape(pass_label)}|{re.escape(fail_label)})"
    pattern = re.compile(rf"verdict\W{{0,6}}{labels}(?!\w)", re.IGNORECASE)
    matches = list(pattern.finditer(answer))
    if matches:
        last = matches[-1]
        line_start = answer.rfind("\n", 0, last.start()) + 1
        line_end = answer.find("\n", last.end())
        line = answer[line_start : None if line_end < 0 else line_end]
        said = {m.group(1).casefold() for m in pattern.finditer(line)}
        if len(said) > 1:
            return None
        return last.group(1).casefold() == pass_label.casefold()
    lines = [ln.strip(" \t*_`'\".:!#>-[]()") for ln in answer.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if lines:
        word = lines[-1].casefold()
        if word == pass_label.casefold():
            return True
        if word == fail_label.casefold():
            return False
    return None


def _render_input(value: Any) -> str:
    """A case's input as the judge should read it: chat messages as ``role: content`` lines, a single
    template variable as its text, several as ``name: value`` lines."""
    if isinstance(value, list):
        lines = []
        for m in value:
            if isinstance(m, dict):
                content = m.get("content")
                if isinstance(content, list):  # content parts: keep the text ones
                    content = content_text(content)
                lines.append(f"{m.get('role', 'user')}: {content}")
            else:
                lines.append(str(m))
        return "\n".join(lines)
    if isinstance(value, dict):
        if len(value) == 1:
            only = next(iter(value.values()))
            return only if isinstance(only, str) else json.dumps(only, ensure_ascii=False)
        return "\n".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in value.items()
        )
    return "" if value is None else str(value)


def _render_expected(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "Any of:\n" + "\n".join(f"- {v}" for v in value)
    return json.dumps(value, ensure_ascii=False, indent=2)


class LlmJudgeScorer(BaseScorer):
    """A judge model grades the output against a rubric with a binary verdict, ``samples`` times.

    Design: pass/fail labels rather than a 1-5 scale, because a binary verdict is what a CI gate
    needs and what small judges answer most consistently; graded nuance comes from the vote share.
    The score is the share of pass votes among the valid votes; an answer without a clear verdict,
    or a judge call that failed, is an abstention (reported, not counted). No valid vote at all
    scores 0. ``details`` keeps what reproduces the verdict: route, judge model, the exact messages
    and params sent, and every raw answer with its parsed vote.
    """

    type = "llm_judge"
    options: LlmJudgeOptions

    def __init__(self, options: LlmJudgeOptions) -> None:
        super().__init__(options)
        template = options.prompt if options.prompt is not None else DEFAULT_JUDGE_PROMPT
        self.prompt = Prompt.from_spec(
            f"{self.name}-judge", 1, "", {"messages": [{"role": "user", "content": template}]}
        )

    def params(self) -> dict[str, Any]:
        o = self.options
        temperature = o.temperature if o.temperature is not None else (0.0 if o.samples == 1 else 0.7)
        params: dict[str, Any] = {"temperature": temperature}
        if o.max_tokens is not None:
            params["max_tokens"] = o.max_tokens
        return params

    def messages(self, case: Case, observation: Observation) -> list[dict[str, Any]]:
        o = self.options
        variables = {
            "rubric": o.rubric.strip(),
            "input": _render_input(case.input),
            "expected": _render_expected(case.expected),
            "output": observation.output,
            "pass_label": o.pass_label,
            "fail_label": o.fail_label,
        }
        return self.prompt.render(variables)

    async def _ask(
        self, ctx: ScoreContext, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> dict[str, Any]:
        """One judge sample: its raw answer, parsed vote (a label, or None for an abstention) and,
        for an abstention, why: ``failed`` (the judge call failed) or ``unparseable``."""
        o = self.options
        try:
            answer = await ctx.complete(o.route, [dict(m) for m in messages], **params)
        except ShipyardError as exc:
            return {"answer": None, "vote": None, "abstain": "failed", "error": exc.message, "model": None}
        if answer.error is not None:
            return {
                "answer": answer.output or None,
                "vote": None,
                "abstain": "failed",
                "error": answer.error,
                "model": answer.model,
            }
        vote = parse_verdict(answer.output, o.pass_label, o.fail_label)
        if vote is None:
            return {
                "answer": answer.output,
                "vote": None,
                "abstain": "unparseable",
                "error": f"no `VERDICT: {o.pass_label}|{o.fail_label}` in the answer",
                "model": answer.model,
            }
        return {
            "answer": answer.output,
            "vote": o.pass_label if vote else o.fail_label,
            "model": answer.model,
        }

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        messages = self.messages(case, observation)
        params = self.params()
        samples = await asyncio.gather(*(self._ask(ctx, messages, params) for _ in range(o.samples)))
        passes = sum(1 for s in samples if s["vote"] == o.pass_label)
        fails = sum(1 for s in samples if s["vote"] == o.fail_label)
        failed_calls = sum(1 for s in samples if s.get("abstain") == "failed")
        unparseable = sum(1 for s in samples if s.get("abstain") == "unparseable")
        models = [s["model"] for s in samples if s["model"]]
        details: dict[str, Any] = {
            "judge_route": o.route,
            "judge_model": models[0] if models else None,
            "messages": messages,
            "params": params,
            "samples": samples,
            "votes": {"pass": passes, "fail": fails, "abstain": o.samples - passes - fails},
        }
        abstained = []
        if unparseable:
            abstained.append(f"{unparseable} without a verdict")
        if failed_calls:
            abstained.append(f"{failed_calls} failed judge call{'s' if failed_calls > 1 else ''}")
        abstain_note = f"; abstained: {', '.join(abstained)}" if abstained else ""
        valid = passes + fails
        if valid == 0:
            first_error = next((s["error"] for s in samples if s.get("error")), "")
            return self.result(
                0.0,
                f"judge `{o.route}` gave no usable verdict in {o.samples} sample(s){abstain_note}"
                + (f" (first: {one_line(first_error, 120)})" if first_error else ""),
                details,
            )
        value = passes / valid
        if passes == fails:
            verdict = f"judge split {passes}-{fails} (tie)"
            majority = None
        else:
            majority = o.pass_label if passes > fails else o.fail_label
            verdict = f"judge voted {majority} ({max(passes, fails)} of {valid} valid votes)"
        reason = ""
        for s in samples:
            if s["vote"] is not None and (majority is None or s["vote"] == majority):
                reason = _reasoning(s["answer"])
                break
        return self.result(
            value, f"{verdict}{abstain_note}" + (f": {clip(reason, 120)}" if reason else ""), details
        )


_VERDICT_LINE = re.compile(r"^.*verdict\W.*$", re.IGNORECASE | re.MULTILINE)


def _reasoning(answer: str) -> str:
    """The judge's reasoning without the verdict line, flattened for a one-line explanation."""
    return one_line(_VERDICT_LINE.sub("", answer), 400)
