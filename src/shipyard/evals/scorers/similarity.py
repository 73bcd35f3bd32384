"""Text similarity to the expected answer: Levenshtein, BLEU and ROUGE-L, each graded in [0, 1].

BLEU and ROUGE-L are implemented here rather than imported, so that the metrics are part of the
runtime install; they reproduce ``sacrebleu.sentence_bleu`` and ``rouge_score``'s ``rougeL`` with
default settings (the tests check both on a hundred generated pairs).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import (
    VALUE_HELP,
    BaseScorer,
    TextOrTexts,
    against,
    expected_texts,
    normalizer,
)


def levenshtein_distance(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), by Myers' bit-parallel algorithm in
    Hyyrö's formulation: one pass over ``a`` with ``b``'s column held in an integer's bits, so long
    outputs cost O(len(a) * len(b) / 64) machine work instead of a quadratic table in Python."""
    if a == b:
        return 0
    # Common ends never change the distance and are common between a model's output and its reference.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    end = 0
    while end < len(a) and end < len(b) and a[-1 - end] == b[-1 - end]:
        end += 1
    if end:
        a, b = a[:-end], b[:-end]
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, dist = full, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & full)
        mh = pv & xh
        if ph & high:
            dist += 1
        elif mh & high:
            dist -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (~(xv | ph) & full)
        mv = ph & xv
    return dist


class LevenshteinOptions(ScorerOptions):
    value: TextOrTexts = Field(None, description=VALUE_HELP)
    threshold: float = Field(
        0.8, ge=0, le=1, description="A case passes when similarity (1 - distance / longer length) >= this."
    )
    ignore_case: bool = Field(False, description="Compare case-insensitively.")
    strip: bool = Field(True, description="Ignore leading and trailing whitespace on both sides.")


class LevenshteinScorer(BaseScorer):
    """Character-level similarity: 1 - edit distance / length of the longer text."""

    type = "levenshtein"
    options: LevenshteinOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        answers = expected_texts(case, o.value)
        norm = normalizer(o.ignore_case, o.strip)
        output = norm(observation.output)
        best: tuple[float, int, int, str] | None = None
        for answer in answers:
            ref = norm(answer)
            longest = max(len(ref), len(output))
            distance = levenshtein_distance(output, ref)
            similarity = 1.0 if longest == 0 else 1 - distance / longest
            if best is None or similarity > best[0]:
                best = (similarity, distance, longest, answer)
        assert best is not None
        similarity, distance, longest, answer = best
        return self.result(
            similarity,
            f"similarity {similarity:.3f} to {against(answers, answer)}: edit distance {distance} over "
            f"{longest} characters",
            {"distance": distance, "length": longest, "reference": answer},
        )


# --- BLEU: sacrebleu's sentence_bleu with its defaults (13a tokenizer, exp smoothing, effective order)

# mteval-v13a's tokenization as sacrebleu's TokenizerRegexp writes it, rule for rule.
_BLEU_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)
BLEU_MAX_ORDER = 4


def bleu_tokenize(line: str, lowercase: bool = False) -> list[str]:
    """sacrebleu's ``13a`` tokens of one segment (after its own lowercasing and rstrip)."""
    if lowercase:
        line = line.lower()
    line = line.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _BLEU_RULES:
        line = pattern.sub(repl, line)
    return line.split()


def _ngrams(tokens: list[str], max_order: int) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1)
    )


@dataclass(frozen=True, slots=True)
class BleuResult:
    score: float  # in [0, 1] (sacrebleu reports 100 times this)
    precisions: tuple[float, ...]  # per n-gram order, in [0, 1], smoothed as the score used them
    brevity_penalty: float
    hyp_len: int
    ref_len: int


def sentence_bleu(hypothesis: str, reference: str, lowercase: bool = False) -> BleuResult:
    """Sentence BLEU of one hypothesis against one reference, as ``sacrebleu.sentence_bleu(hyp,
    [ref])`` computes it: exp smoothing (NIST's, as mteval-v13a) and effective order, so a short
    sentence is not zeroed by the orders it is too short to have."""
    hyp = bleu_tokenize(hypothesis, lowercase)
    ref = bleu_tokenize(reference, lowercase)
    hyp_ngrams, ref_ngrams = _ngrams(hyp, BLEU_MAX_ORDER), _ngrams(ref, BLEU_MAX_ORDER)
    correct = [0] * BLEU_MAX_ORDER
    total = [0] * BLEU_MAX_ORDER
    for ngram, count in hyp_ngrams.items():
        total[len(ngram) - 1] += count
        if ngram in ref_ngrams:
            correct[len(ngram) - 1] += min(count, ref_ngrams[ngram])
    sys_len, ref_len = len(hyp), len(ref)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    # Precisions in percent, with sacrebleu's very operations, so the floating-point result is identical.
    percent = [0.0] * BLEU_MAX_ORDER
    if not any(correct):
        return BleuResult(0.0, tuple(percent), bp, sys_len, ref_len)
    smooth = 1.0
    order = BLEU_MAX_ORDER
    for n in range(1, BLEU_MAX_ORDER + 1):
        if total[n - 1] == 0:
            break
        order = n
        if correct[n - 1] == 0:
            smooth *= 2
            percent[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            percent[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    logs = [math.log(p) if p > 0 else -9999999999 for p in percent[:order]]
    score = bp * math.exp(sum(logs) / order) / 100.0
    return BleuResult(score, tuple(p / 100.0 for p in percent), bp, sys_len, ref_len)


class BleuOptions(ScorerOptions):
    value: TextOrTexts = Field(
        None,
        description="Reference, or list of references each scored on its own (the best wins, unlike "
        "multi-reference BLEU); default: the case's `expected`.",
    )
    threshold: float = Field(0.3, ge=0, le=1, description="A case passes when BLEU (0-1) >= this.")
    lowercase: bool = Field(False, description="Lowercase both sides first (sacrebleu's `lowercase`).")


class BleuScorer(BaseScorer):
    """Sentence BLEU in [0, 1], identical to sacrebleu's ``sentence_bleu(...).score / 100``."""

    type = "bleu"
    options: BleuOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        answers = expected_texts(case, self.options.value)
        results = [(sentence_bleu(observation.output, a, self.options.lowercase), a) for a in answers]
        best, answer = max(results, key=lambda r: r[0].score)
        precisions = "/".join(f"{100 * p:.0f}" for p in best.precisions)
        return self.result(
            best.score,
            f"BLEU {best.score:.3f} against {against(answers, answer)}: 1-4-gram precisions {precisions}%, "
            f"brevity penalty {best.brevity_penalty:.2f} ({best.hyp_len} vs {best.ref_len} tokens)",
            {
                "precisions": list(best.precisions),
                "brevity_penalty": best.brevity_penalty,
                "hyp_len": best.hyp_len,
                "ref_len": best.ref_len,
                "reference": answer,
            },
        )


# --- ROUGE-L: rouge_score's rougeL F-measure with its default tokenizer (no stemming)

_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokenize(text: str) -> list[str]:
    """rouge_score's default tokens: lowercase ASCII letters and digits; everything else separates.
    (Its replace-then-split-then-filter comes to exactly these runs.)"""
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyrö): one integer of
    len(b) bits carries a whole table row, so each token of ``a`` costs a few big-integer operations."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        u = row & masks.get(token, 0)
        row = ((row + u) | (row - u)) & full
    return len(b) - row.bit_count()


@dataclass(frozen=True, slots=True)
class RougeResult:
    fmeasure: float
    precision: float
    recall: float
    lcs: int


def rouge_l(reference: str, hypothesis: str) -> RougeResult:
    """ROUGE-L of a hypothesis against a reference, as ``RougeScorer(["rougeL"]).score(ref, hyp)``."""
    ref, hyp = rouge_tokenize(reference), rouge_tokenize(hypothesis)
    if not ref or not hyp:
        return RougeResult(0.0, 0.0, 0.0, 0)
    lcs = lcs_length(ref, hyp)
    precision, recall = lcs / len(hyp), lcs / len(ref)
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeResult(f, precision, recall, lcs)


class RougeLOptions(ScorerOptions):
    value: TextOrTexts = Field(None, description=VALUE_HELP)
    threshold: float = Field(0.5, ge=0, le=1, description="A case passes when the ROUGE-L F-measure >= this.")


class RougeLScorer(BaseScorer):
    """ROUGE-L F-measure (longest common subsequence of word tokens), as rouge-score computes it."""

    type = "rouge_l"
    options: RougeLOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        answers = expected_texts(case, self.options.value)
        results = [(rouge_l(a, observation.output), a) for a in answers]
        best, answer = max(results, key=lambda r: r[0].fmeasure)
        if not rouge_tokenize(observation.output):
            why = f"ROUGE-L 0: output has no word tokens (compared with {against(answers, answer)})"
        else:
            why = (
                f"ROUGE-L F {best.fmeasure:.3f} against {against(answers, answer)}: precision "
                f"{best.precision:.2f}, recall {best.recall:.2f}, common subsequence of {best.lcs} tokens"
            )
        return self.result(
            best.fmeasure,
            why,
            {"precision": best.precision, "recall": best.recall, "lcs": best.lcs, "reference": answer},
        )
