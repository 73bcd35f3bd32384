"""Built-in guard scanners, registered through the ``register_scanners`` plugin hook.

Every scanner here is offline and deterministic: regular expressions, checksums, word lists and a
little arithmetic (entropy, n-gram overlap), so it adds microseconds, not a model call, to a
request. Each one's limits are stated in its docstring and in ``docs/security.md``.

| type | stages | default action | finds |
|---|---|---|---|
| ``pii`` | input, output | redact | e-mail, phone, card (Luhn), IBAN (mod 97), US SSN, IP, names (cued) |
| ``secrets`` | input, output | redact | API keys by prefix, PEM private keys, JWTs, bearer tokens, entropy |
| ``banned`` | input, output | block | configured substrings, regexes and topics |
| ``token_limit`` | input | block | requests longer than ``max_tokens`` (estimated) |
| ``canary`` | output | block | the canary token the pipeline planted in the system prompt |
| ``system_leak`` | output | block | answers that repeat the system prompt (n-gram overlap) |
| ``toxicity`` | input, output | block | insults, profanity, threats (lexicon, obfuscation-aware) |
| ``json_schema`` | output | block | answers that are not JSON valid against the route's schema |
| ``refusal`` | output | flag | "I'm sorry, but I can't…" answers |
| ``urls`` | input, output | redact | IP-literal, punycode, shortener, data: and off-allowlist URLs |
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from shipyard.guard import pii as pii_mod
from shipyard.guard.base import Action, Finding, ScanContext, ScannerOptions, ScannerType, Stage
from shipyard.plugins import hookimpl

BOTH: tuple[Stage, ...] = ("input", "output")


class _Base:
    """Shared plumbing: a name, the stages, and findings carrying the configured action."""

    stages: tuple[Stage, ...] = BOTH

    def __init__(self, name: str, options: ScannerOptions) -> None:
        self.name = name
        self.options = options

    def _finding(
        self,
        kind: str,
        start: int,
        end: int,
        score: float = 1.0,
        detail: str = "",
        replacement: str | None = None,
    ) -> Finding:
        action: Action = self.options.action
        return Finding(self.name, kind, score, start, end, action, replacement, detail)

    def _keep(self, findings: Iterable[Finding]) -> list[Finding]:
        return [f for f in findings if f.score >= self.options.threshold]


# -- pii ---------------------------------------------------------------------------------------------
class PiiOptions(ScannerOptions):
    action: Action = Field("redact", description="What to do with this scanner's findings.")
    kinds: list[str] = Field(
        default_factory=lambda: list(pii_mod.ALL_KINDS),
        description=f"PII kinds to look for: {', '.join(pii_mod.ALL_KINDS)}.",
    )

    @field_validator("kinds")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        v = [k.upper() for k in v]
        unknown = sorted(set(v) - set(pii_mod.ALL_KINDS))
        if unknown:
            raise ValueError(f"unknown PII kind(s) {unknown}; known: {', '.join(pii_mod.ALL_KINDS)}")
        return v


class PiiScanner(_Base):
    """Structured PII with checksums (cards: Luhn; IBAN: mod 97; SSN: SSA issuing rules) and person
    names next to a cue ("Dr.", "my name is", "Name:"). Names without a cue are missed."""

    options: PiiOptions

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        return self._keep(
            self._finding(f.kind, f.start, f.end, 1.0 if f.kind != pii_mod.PERSON else 0.8)
            for f in pii_mod.find_pii(text, self.options.kinds)
        )


# -- secrets -----------------------------------------------------------------------------------------
_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    # (kind, pattern, group holding the secret)
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            # The body is base64 lines (and PEM headers like `Proc-Type: 4,ENCRYPTED`); a block cut
            # short (a truncated or still-streaming answer) is matched up to where it stops.
            r"(?:\s*[A-Za-z0-9+/=]{16,}|\s*[A-Za-z-]+:[^\n]*)*"
            r"(?:\s*-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)?"
        ),
        0,
    ),
    ("anthropic_key", re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{20,}"), 0),
    ("openai_key", re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-|shp-)?[A-Za-z0-9_-]{20,}"), 0),
    (
        "aws_access_key",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA)[A-Z0-9]{16}(?![A-Z0-9])"),
        0,
    ),
    (
        "aws_secret_key",
        re.compile(
            r"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        1,
    ),
    (
        "github_token",
        re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
        0,
    ),
    ("slack_token", re.compile(r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,}"), 0),
    ("slack_webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}"), 0),
    ("google_api_key", re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])"), 0),
    ("stripe_key", re.compile(r"(?<![\w])(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{20,}"), 0),
    ("huggingface_token", re.compile(r"(?<![\w])hf_[A-Za-z0-9]{30,}"), 0),
    ("jwt", re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), 0),
    ("bearer_token", re.compile(r"(?i:\bbearer)\s+([A-Za-z0-9._~+/-]{20,}=*)"), 1),
    (
        "password_assignment",
        re.compile(
            # Not right after "<": `<SECRET:openai_key>` is this scanner's own placeholder.
            r"(?<!<)(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret))"
            r"[\"']?\s*[:=]\s*[\"']?([^\s\"'<>]{8,})"
        ),
        1,
    ),
)
# A pattern runs only when its cue (lowercased) occurs in the text: most text has none of them,
# and a substring test is far cheaper than a regex pass.
_SECRET_CUES = {
    "private_key": "private key",
    "anthropic_key": "sk-ant-",
    "openai_key": "sk-",
    "aws_access_key": "",
    "aws_secret_key": "secret",
    "github_token": "",
    "slack_token": "xox",
    "slack_webhook": "hooks.slack.com",
    "google_api_key": "aiza",
    "stripe_key": "_live_|_test_",
    "huggingface_token": "hf_",
    "jwt": "eyj",
    "bearer_token": "bearer",
    "password_assignment": "",
}
_ENTROPY_CANDIDATE = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{20,}(?![A-Za-z0-9+/_=-])")


def shannon_entropy(s: str) -> float:
    """Bits per character of ``s``'s own character distribution."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


class SecretsOptions(ScannerOptions):
    action: Action = Field("redact", description="What to do with this scanner's findings.")
    entropy: bool = Field(True, description="Also report unknown high-entropy strings.")
    entropy_threshold: float = Field(
        4.0,
        ge=0,
        le=8,
        description="Bits per character above which a 20+ character token of letters and digits counts "
        "as a secret. Random base64 scores about 4.5–5.5, English words and identifiers stay under 3.8, "
        "hex digests top out at 4.0 (so hashes are not reported).",
    )
    entropy_min_length: int = Field(24, ge=12, description="Shortest token the entropy check looks at.")


class SecretsScanner(_Base):
    """Known credential formats by prefix and shape, PEM private keys (whole block, or the header
    onwards when the block is cut), JWTs, bearer tokens, ``password=…`` style assignments, and
    other tokens of mixed letters and digits whose entropy exceeds ``entropy_threshold``."""

    options: SecretsOptions

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        found: list[Finding] = []

        def free(start: int, end: int) -> bool:
            return not any(start < f.end and f.start < end for f in found)

        low = text.lower()
        for kind, rx, group in _SECRET_PATTERNS:
            cue = _SECRET_CUES.get(kind, "")
            if cue and not any(c in low for c in cue.split("|")):
                continue
            for m in rx.finditer(text):
                start, end = m.span(group)
                if end > start and free(start, end):
                    found.append(self._finding(kind, start, end, replacement=f"<SECRET:{kind}>"))
        if self.options.entropy:
            for m in _ENTROPY_CANDIDATE.finditer(text):
                token = m.group(0)
                if len(token) < self.options.entropy_min_length or not free(m.start(), m.end()):
                    continue
                # Identifiers, words and paths lack one of these classes; keys have all three.
                if not (
                    re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"\d", token)
                ):
                    continue
                h = shannon_entropy(token)
                if h >= self.options.entropy_threshold:
                    score = min(1.0, 0.5 + (h - self.options.entropy_threshold) / 2)
                    found.append(
                        self._finding(
                            "high_entropy",
                            m.start(),
                            m.end(),
                            score,
                            detail=f"{h:.2f} bits/char",
                            replacement="<SECRET:high_entropy>",
                        )
                    )
        return self._keep(sorted(found, key=lambda f: f.start))


# -- banned ------------------------------------------------------------------------------------------
class BannedOptions(ScannerOptions):
    substrings: list[str] = Field(
        default_factory=list, description="Phrases to find anywhere (case-insensitive, whole words)."
    )
    regexes: list[str] = Field(
        default_factory=list, description="Python regular expressions (case-insensitive)."
    )
    topics: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Topic name → keywords; any keyword (whole word, case-insensitive) reports the topic.",
    )

    @field_validator("regexes")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for i, rx in enumerate(v):
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"regexes[{i}] `{rx}` is not a valid regular expression: {exc}") from None
        return v


def _phrase_pattern(phrase: str) -> str:
    body = r"\s+".join(re.escape(w) for w in phrase.split())
    left = r"\b" if phrase[:1].isalnum() else ""
    right = r"\b" if phrase[-1:].isalnum() else ""
    return left + body + right


class BannedScanner(_Base):
    """Configured phrases, regular expressions and topics (keyword lists). Topics are keyword
    matches, not a classifier: list the words your forbidden topic is discussed with."""

    options: BannedOptions

    def __init__(self, name: str, options: BannedOptions) -> None:
        super().__init__(name, options)
        self._rules: list[tuple[str, re.Pattern[str]]] = []
        for s in options.substrings:
            if s.strip():
                self._rules.append((f"substring:{s}", re.compile(_phrase_pattern(s), re.IGNORECASE)))
        for rx in options.regexes:
            self._rules.append((f"regex:{rx}", re.compile(rx, re.IGNORECASE)))
        for topic, words in options.topics.items():
            alternatives = "|".join(_phrase_pattern(w) for w in words if w.strip())
            if alternatives:
                self._rules.append((f"topic:{topic}", re.compile(alternatives, re.IGNORECASE)))

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        out = []
        for label, rx in self._rules:
            for m in rx.finditer(text):
                if m.end() > m.start():
                    out.append(self._finding(label.split(":", 1)[0], m.start(), m.end(), detail=label))
        return self._keep(out)


# -- token limit -------------------------------------------------------------------------------------
class TokenLimitOptions(ScannerOptions):
    max_tokens: int = Field(4096, ge=1, description="Most input tokens a request may carry (estimated).")

    @field_validator("action")
    @classmethod
    def _no_redact(cls, v: Action) -> Action:
        if v == "redact":
            raise ValueError("token_limit can `block` or `flag`; there is no span to redact")
        return v


_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate close to BPE counts for English: words and punctuation, or a
    quarter of the characters for text without spaces (code, other scripts), whichever is larger."""
    return max(len(_TOKEN_RE.findall(text)), math.ceil(len(text) / 4))


class TokenLimitScanner(_Base):
    """The whole request (every message joined) against ``max_tokens``, estimated without a
    tokenizer (see :func:`estimate_tokens`); the provider's own limit still applies after it."""

    stages = ("input",)
    whole_request = True
    options: TokenLimitOptions

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        n = estimate_tokens(text)
        if n <= self.options.max_tokens:
            return []
        return [self._finding("too_long", 0, len(text), detail=f"~{n} tokens > {self.options.max_tokens}")]


# -- canary ------------------------------------------------------------------------------------------
class CanaryOptions(ScannerOptions):
    template: str = Field(
        "Confidential marker, never repeat it: {canary}",
        description="Line appended to the system prompt; `{canary}` is replaced by a fresh random token.",
    )

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{canary}" not in v:
            raise ValueError("template must contain `{canary}`")
        return v


class CanaryScanner(_Base):
    """Finds the per-request canary token the pipeline planted in the system prompt. A model that
    repeats it is repeating its instructions: the surest sign of a system-prompt leak."""

    stages = ("output",)
    plants_canary = True
    options: CanaryOptions

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        out = []
        for canary in ctx.canaries:
            start = text.find(canary)
            while start >= 0:
                out.append(self._finding("canary_leak", start, start + len(canary), replacement="<REDACTED>"))
                start = text.find(canary, start + 1)
        return self._keep(out)


# -- system prompt leak ------------------------------------------------------------------------------
class SystemLeakOptions(ScannerOptions):
    ngram: int = Field(5, ge=2, le=20, description="Words per n-gram compared.")
    threshold: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Share of the system prompt's n-grams the answer must repeat to be reported.",
    )
    min_words: int = Field(
        8, ge=2, description="System prompts shorter than this (in words) are not checked."
    )


_WORD_RE = re.compile(r"\w+")


class SystemLeakScanner(_Base):
    """Word n-gram overlap with the system prompt: the score is the share of the system prompt's
    n-grams that the answer repeats (case- and punctuation-insensitive), the span runs from the
    first to the last repeated n-gram. Paraphrases and translations are not caught; canaries
    complement it for verbatim leaks of short prompts."""

    stages = ("output",)
    whole_text = True
    options: SystemLeakOptions

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        system = ctx.system_prompt
        if not system:
            return []
        for canary in ctx.canaries:
            system = system.replace(canary, " ")
        n = self.options.ngram
        sys_words = [w.lower() for w in _WORD_RE.findall(system)]
        if len(sys_words) < max(n, self.options.min_words):
            return []
        sys_grams = {tuple(sys_words[i : i + n]) for i in range(len(sys_words) - n + 1)}
        matches = list(_WORD_RE.finditer(text))
        words = [m.group(0).lower() for m in matches]
        hit: set[tuple[str, ...]] = set()
        first = last = -1
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in sys_grams:
                hit.add(gram)
                if first < 0:
                    first = i
                last = i + n - 1
        if not hit:
            return []
        score = len(hit) / len(sys_grams)
        finding = self._finding(
            "system_prompt_overlap",
            matches[first].start(),
            matches[last].end(),
            score,
            detail=f"{len(hit)}/{len(sys_grams)} {n}-grams",
            replacement="<REDACTED>",
        )
        return self._keep([finding])


# -- toxicity ----------------------------------------------------------------------------------------
# A small English lexicon. Entries are matched as whole words after folding the usual disguises:
# case, leetspeak digits and symbols (sh1t, @ss, $hit), repeated letters (fuuuck), separators
# between letters (f.u.c.k, f u c k) and masking stars (f**k). Phrases catch threats that are only
# toxic together ("kill you").
_PROFANITY = (
    "fuck fucking fucker fucked motherfucker shit shitty bullshit bitch bastard asshole ass dick dickhead "
    "cunt prick twat wanker bollocks piss pissed crap damn slut whore douche douchebag jackass"
)
_INSULTS = (
    "idiot idiotic moron moronic imbecile stupid dumb dumbass retard retarded loser pathetic worthless "
    "useless scum scumbag trash garbage freak creep jerk clown ugly fat disgusting pig"
)
_THREATS = (
    "kill you|i will kill|i'll kill|gonna kill|going to kill you|hurt you|beat you up|murder you|"
    "shoot you|stab you|you will die|you should die|kill yourself|kys|die in a fire|i know where you live"
)
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "i"}
)


@functools.lru_cache(maxsize=16384)
def _fold(word: str) -> str:
    w = word.lower().translate(_LEET)
    return re.sub(r"(.)\1+", r"\1", w)


class ToxicityOptions(ScannerOptions):
    categories: list[str] = Field(
        default_factory=lambda: ["profanity", "insult", "threat"],
        description="Which lexicons to use: profanity, insult, threat.",
    )
    extra_words: list[str] = Field(
        default_factory=list, description="More words (category `custom`), matched the same way."
    )
    allow_words: list[str] = Field(
        default_factory=list, description="Words never reported (e.g. `damn`, `crap` for a casual tone)."
    )

    @field_validator("categories")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - {"profanity", "insult", "threat"})
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: profanity, insult, threat")
        return v


_WORDISH = re.compile(r"[A-Za-z0-9@$!|*]+(?:'[A-Za-z]+)?")
_SPACED = re.compile(r"(?<![A-Za-z0-9])(?:[A-Za-z0-9@$*][ .\-_]){2,}[A-Za-z0-9@$*](?![A-Za-z0-9])")


class ToxicityScanner(_Base):
    """Lexicon-based: catches explicit insults, profanity and threats, including disguised spellings.
    It does not understand context (sarcasm, quoted speech, reclaimed words) and misses toxicity
    phrased politely; treat it as a floor, not a classifier. Score: 1.0 for threats, 0.9 insults,
    0.8 profanity."""

    options: ToxicityOptions

    def __init__(self, name: str, options: ToxicityOptions) -> None:
        super().__init__(name, options)
        allow = {_fold(w) for w in options.allow_words}
        self._words: dict[str, tuple[str, float]] = {}
        lexicons = {"profanity": (_PROFANITY, 0.8), "insult": (_INSULTS, 0.9)}
        for cat in options.categories:
            if cat in lexicons:
                words, score = lexicons[cat]
                for w in words.split():
                    if _fold(w) not in allow:
                        self._words[_fold(w)] = (cat, score)
        for w in options.extra_words:
            self._words[_fold(w)] = ("custom", 1.0)
        self._star_words = [(w, meta) for w, meta in self._words.items()]
        self._threat = (
            re.compile(r"\b(?:" + _THREATS + r")\b", re.IGNORECASE)
            if "threat" in options.categories
            else None
        )

    def _lookup(self, token: str) -> tuple[str, float] | None:
        if "*" in token:
            core = token.strip("*")
            if not core or "*" not in core:
                token = core
            else:
                # Each run of stars hides one or more letters: "f**k", "b*tch".
                masked = core.lower().translate(_LEET)
                rx = re.compile(".+".join(re.escape(part) for part in re.split(r"\*+", masked)) + "$")
                for w, meta in self._star_words:
                    if rx.match(w):
                        return meta
                return None
        return self._words.get(_fold(token))

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        out: list[Finding] = []
        for m in _WORDISH.finditer(text):
            meta = self._lookup(m.group(0))
            if meta is not None:
                out.append(self._finding(meta[0], m.start(), m.end(), meta[1], replacement="<TOXIC>"))
        for m in _SPACED.finditer(text):
            joined = re.sub(r"[ .\-_]", "", m.group(0))
            meta = self._lookup(joined)
            if meta is not None and not any(m.start() < f.end and f.start < m.end() for f in out):
                out.append(self._finding(meta[0], m.start(), m.end(), meta[1], replacement="<TOXIC>"))
        if self._threat is not None:
            for m in self._threat.finditer(
                text.translate(_LEET) if any(c in text for c in "0134579@$") else text
            ):
                out.append(self._finding("threat", m.start(), m.end(), 1.0, replacement="<TOXIC>"))
        return self._keep(sorted(out, key=lambda f: f.start))


# -- JSON schema -------------------------------------------------------------------------------------
class JsonSchemaOptions(ScannerOptions):
    json_schema: dict[str, Any] | None = Field(
        None,
        alias="schema",
        description="Schema the answer must satisfy; unset: the route prompt's `response_schema`, else "
        "the request's `response_format.json_schema.schema`, else any valid JSON.",
    )
    strip_fences: bool = Field(True, description="Accept an answer wrapped in a ```json fence.")

    @field_validator("action")
    @classmethod
    def _no_redact(cls, v: Action) -> Action:
        if v == "redact":
            raise ValueError("json_schema can `block` or `flag`; an invalid answer cannot be redacted")
        return v

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            import jsonschema

            try:
                jsonschema.Draft202012Validator.check_schema(v)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return v


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class JsonSchemaScanner(_Base):
    """The whole answer must parse as JSON and validate against the schema (Draft 2020-12)."""

    stages = ("output",)
    whole_text = True
    options: JsonSchemaOptions

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        import json

        import jsonschema

        body = text
        if self.options.strip_fences and (m := _FENCE.match(text)):
            body = m.group(1)
        try:
            value = json.loads(body)
        except ValueError as exc:
            return [self._finding("invalid_json", 0, len(text), detail=str(exc)[:200])]
        schema = self.options.json_schema or ctx.response_schema
        if schema is None:
            return []
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if error is None:
            return []
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return [self._finding("schema_mismatch", 0, len(text), detail=f"{where}: {error.message}"[:300])]


# -- refusal -----------------------------------------------------------------------------------------
_REFUSALS = (
    r"i(?:'m| am) (?:sorry|afraid),? (?:but )?i (?:can(?:'|no)t|cannot|won'?t|am not able to|am unable to)",
    r"i (?:can(?:'|no)t|cannot|won'?t|am unable to|am not able to) (?:help|assist|comply|provide|do that|"
    r"fulfil+|answer|create|generate|share|support)",
    r"as an ai(?: language model)?,? i (?:can(?:'|no)t|cannot|don'?t|do not|am not)",
    r"i(?:'m| am) not able to (?:help|assist|provide|comply)",
    r"(?:this|that|your) request (?:violates|goes against|is against)",
    r"i must (?:decline|refuse)",
    r"i(?:'m| am) (?:programmed|designed) (?:not )?to (?:avoid|refuse|decline)",
)


class RefusalOptions(ScannerOptions):
    action: Action = Field("flag", description="What to do with this scanner's findings.")
    phrases: list[str] = Field(default_factory=list, description="More refusal phrases (case-insensitive).")
    within_chars: int = Field(
        300, ge=0, description="Only look this far into the answer (refusals come first); 0: everywhere."
    )


class RefusalScanner(_Base):
    """Common English refusal phrasings near the start of the answer. Counting them shows how
    often a route refuses (over-blocking) and, in red-team runs, whether an attack was refused."""

    stages = ("output",)
    whole_text = True  # "near the start" needs the start: in streams it runs on the whole answer
    options: RefusalOptions

    def __init__(self, name: str, options: RefusalOptions) -> None:
        super().__init__(name, options)
        extra = [_phrase_pattern(p) for p in options.phrases if p.strip()]
        self._rx = re.compile("|".join([*_REFUSALS, *extra]), re.IGNORECASE)

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        limit = self.options.within_chars
        view = text[:limit] if limit else text
        normalized = view.replace("\u2019", "'")
        m = self._rx.search(normalized)
        return self._keep([self._finding("refusal", m.start(), m.end(), 0.9)]) if m else []


# -- URLs --------------------------------------------------------------------------------------------
_SHORTENER_LIST = (
    "bit.ly tinyurl.com t.co goo.gl ow.ly is.gd buff.ly rebrand.ly cutt.ly shorturl.at tiny.cc rb.gy "
    "s.id t.ly v.gd lnkd.in bl.ink soo.gd clck.ru qr.ae adf.ly shorte.st"
)
_SHORTENERS = frozenset(_SHORTENER_LIST.split())
_URL_RE = re.compile(
    r"(?:(?<![\w.-])(?:https?|ftp|wss?)://[^\s<>\"'`)\]}]+"
    r"|(?<![\w.-])(?:javascript|vbscript):[^\s<>\"'`]+"
    r"|(?<![\w.-])data:[\w.+-]+/[\w.+-]+(?:;[\w.+=-]+)*,[^\s<>\"'`)\]]*"
    r"|(?<![\w.@/-])www\.[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s<>\"'`)\]}]*)",
    re.IGNORECASE,
)


class UrlsOptions(ScannerOptions):
    action: Action = Field("redact", description="What to do with this scanner's findings.")
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="Domains (and their subdomains) that are always fine. When set, every other domain "
        "is reported as `unknown_domain`.",
    )
    block_ip_literals: bool = Field(True, description="Report URLs whose host is an IP address.")
    block_punycode: bool = Field(True, description="Report hosts with `xn--` labels (look-alike domains).")
    block_shorteners: bool = Field(True, description="Report known URL shorteners (bit.ly, t.co, …).")
    block_data_uris: bool = Field(True, description="Report `data:` and `javascript:` URIs.")
    extra_shorteners: list[str] = Field(default_factory=list, description="More shortener domains.")


def _host_in(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


class UrlsScanner(_Base):
    """URLs a user should not be sent to or that exfiltrate data (markdown images with a query
    string are how a prompt-injected model leaks a conversation): IP-literal hosts, punycode,
    shorteners, ``data:``/``javascript:`` URIs and, with an allowlist, every other domain. It does
    not know reputation (no feeds, offline)."""

    options: UrlsOptions

    def __init__(self, name: str, options: UrlsOptions) -> None:
        super().__init__(name, options)
        self._allowed = [d.lower().strip(".") for d in options.allowed_domains]
        self._shorteners = _SHORTENERS | {d.lower() for d in options.extra_shorteners}

    def _verdict(self, url: str) -> str | None:
        low = url.lower()
        if low.startswith(("data:", "javascript:", "vbscript:")):
            return "data_uri" if self.options.block_data_uris else None
        try:
            host = (urlsplit(url if "://" in url else "http://" + url).hostname or "").rstrip(".")
        except ValueError:
            return "malformed_url"
        if not host:
            return "malformed_url"
        if self.options.block_ip_literals and (
            re.fullmatch(r"[\d.]+", host) or ":" in host or re.fullmatch(r"0x[0-9a-f]+", host)
        ):
            return "ip_literal"
        if self.options.block_punycode and any(label.startswith("xn--") for label in host.split(".")):
            return "punycode"
        if self.options.block_shorteners and _host_in(host, self._shorteners):
            return "shortener"
        if self._allowed and not _host_in(host, self._allowed):
            return "unknown_domain"
        return None

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        out = []
        for m in _URL_RE.finditer(text):
            url = m.group(0).rstrip(".,;:!?")
            verdict = self._verdict(url)
            if verdict is not None:
                out.append(
                    self._finding(verdict, m.start(), m.start() + len(url), 0.9, replacement="<URL_REMOVED>")
                )
        return self._keep(out)


# -- registration ------------------------------------------------------------------------------------
def _factory(cls: type[_Base]) -> Any:
    def make(name: str, options: Any) -> Any:
        return cls(name, options)

    return make


BUILTIN: tuple[tuple[str, type[ScannerOptions], type[_Base], str], ...] = (
    (
        "pii",
        PiiOptions,
        PiiScanner,
        "E-mail, phone, card (Luhn), IBAN, US SSN, IP address, cued person names.",
    ),
    (
        "secrets",
        SecretsOptions,
        SecretsScanner,
        "API keys, private keys, JWTs, bearer tokens, high-entropy strings.",
    ),
    (
        "banned",
        BannedOptions,
        BannedScanner,
        "Configured substrings, regular expressions and topic keywords.",
    ),
    ("token_limit", TokenLimitOptions, TokenLimitScanner, "Requests longer than `max_tokens` (estimated)."),
    (
        "canary",
        CanaryOptions,
        CanaryScanner,
        "A per-request canary token planted in the system prompt, leaked.",
    ),
    (
        "system_leak",
        SystemLeakOptions,
        SystemLeakScanner,
        "Answers repeating the system prompt (n-gram overlap).",
    ),
    (
        "toxicity",
        ToxicityOptions,
        ToxicityScanner,
        "Profanity, insults and threats (lexicon, obfuscation-aware).",
    ),
    (
        "json_schema",
        JsonSchemaOptions,
        JsonSchemaScanner,
        "Answers that are not JSON valid against the schema.",
    ),
    ("refusal", RefusalOptions, RefusalScanner, "Refusals (\"I'm sorry, but I can't…\")."),
    ("urls", UrlsOptions, UrlsScanner, "IP-literal, punycode, shortener, data: and off-allowlist URLs."),
)


@hookimpl
def register_scanners() -> list[ScannerType]:
    return [
        ScannerType(name, options, _factory(cls), cls.stages, description)
        for name, options, cls, description in BUILTIN
    ]
