"""Built-in guard scanners, registered through the ``register_scanners`` plugin hook.

Every scanner here is offline and deterministic: regular expressions, checksums, word lists and a
little arithmetic (entropy, n-gram overlap), so it adds microseconds, not a model call, to a
request. Each one's limits are stated in its docstring and in ``docs/security.md``. All but
``token_limit`` and ``json_schema`` read the text through the shared normaliser
(:func:`shipyard.guard.normalize.normalized`) and report spans of the original text.

| type | stages | default action | finds |
|---|---|---|---|
| ``pii`` | input, output | redact | e-mail, phone, card (Luhn), IBAN (mod 97), US SSN, IP, names (cued) |
| ``secrets`` | input, output | redact | API keys by format, PEM keys, JWTs, ``password = …``, entropy |
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
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from shipyard.guard import normalize
from shipyard.guard import pii as pii_mod
from shipyard.guard.base import Action, Finding, ScanContext, ScannerOptions, ScannerType, Stage
from shipyard.plugins import hookimpl

BOTH: tuple[Stage, ...] = ("input", "output")


class _Base:
    """Shared plumbing: a name, the stages, findings carrying the configured action, and the shared
    normaliser: ``find`` reads the text as :func:`normalize.normalized` cleans it (invisible
    characters dropped, full-width letters and Unicode spaces folded, look-alikes folded) and
    ``scan`` maps its spans back onto the original text, so a redaction takes the whole
    obfuscated value."""

    stages: tuple[Stage, ...] = BOTH
    normalizes = True  # False: ``find`` gets the text exactly as it came

    def __init__(self, name: str, options: ScannerOptions) -> None:
        self.name = name
        self.options = options

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        if not self.normalizes:
            return self.find(text, ctx)
        norm = normalize.normalized(text)
        found = self.find(norm.text, ctx)
        if norm.offsets is None or not found:
            return found
        return [replace(f, start=a, end=b) for f in found for a, b in (norm.origin(f.start, f.end),)]

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
        raise NotImplementedError

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
    normalizes = False  # find_pii reads the normalised text itself and reports original spans

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
        return self._keep(
            self._finding(f.kind, f.start, f.end, 1.0 if f.kind != pii_mod.PERSON else 0.8)
            for f in pii_mod.find_pii(text, self.options.kinds)
        )


# -- secrets -----------------------------------------------------------------------------------------
# The rules follow detect-secrets (Yelp): credentials with a known prefix and shape, secret-sounding
# names assigned a value (its KeywordDetector), and strings whose entropy is too high for words
# (its Base64HighEntropyString at 4.5 bits and HexHighEntropyString at 3.0, with its filters for
# ids, UUIDs, templates and sequences). It does not read `pragma: allowlist secret` comments: text
# through a gateway is written by whoever is attacking it.

# Known formats: (kind, pattern, cue). The cue (lowercased; `|` separates alternatives) must occur
# in the text for the pattern to run: most text has none, and a substring test is far cheaper than
# a regular-expression pass. ``_END`` closes a fixed-length format; the compact reading (see
# ``_compact_findings``) matches without it.
_END = r"(?![A-Za-z0-9_-])"
_PREFIXED: tuple[tuple[str, str, str, str], ...] = (
    # (kind, start, body, cue)
    ("anthropic_key", r"(?<![\w-])", r"sk-ant-[A-Za-z0-9_-]{20,}", "sk-ant-"),
    ("openai_key", r"(?<![\w-])", r"sk-(?:proj-|svcacct-|admin-|shp-)?[A-Za-z0-9_-]{20,}", "sk-"),
    ("aws_access_key", r"(?<![A-Z0-9])", r"(?:AKIA|ASIA|ABIA|ACCA|AROA|AIDA|A3T[A-Z0-9])[A-Z0-9]{16}", ""),
    (
        "github_token",
        r"(?<![\w])",
        r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
        "gh|github_pat_",
    ),
    ("gitlab_token", r"(?<![\w-])", r"glpat-[A-Za-z0-9_-]{20}", "glpat-"),
    ("slack_token", r"(?<![\w-])", r"xox[abposr]-[A-Za-z0-9-]{10,}", "xox"),
    ("google_api_key", r"(?<![\w-])", r"AIza[0-9A-Za-z_-]{35}", "aiza"),
    ("stripe_key", r"(?<![\w])", r"(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{20,}", "_live_|_test_"),
    ("huggingface_token", r"(?<![\w])", r"hf_[A-Za-z0-9]{30,}", "hf_"),
    ("sendgrid_key", r"(?<![\w])", r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", "sg."),
    ("npm_token", r"(?<![\w])", r"npm_[A-Za-z0-9]{36}", "npm_"),
    ("pypi_token", r"(?<![\w])", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}", "pypi-"),
    ("square_token", r"(?<![\w])", r"sq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}", "sq0"),
    ("shopify_token", r"(?<![\w])", r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", "shp"),
    ("jwt", r"(?<![\w-])", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "eyj"),
)
_FIXED_LENGTH = frozenset({"aws_access_key", "gitlab_token", "google_api_key", "sendgrid_key", "npm_token",
                           "shopify_token"})  # fmt: skip
_PREFIX_RES = tuple(
    (kind, re.compile(start + body + _END), re.compile(start + body), tuple(cue.split("|")) if cue else ())
    for kind, start, body, cue in _PREFIXED
)
# Formats that need their context (a header, a keyword, a URL): the normal reading only.
_CONTEXT_PATTERNS: tuple[tuple[str, re.Pattern[str], int, str], ...] = (
    # (kind, pattern, group holding the secret, cue)
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
        "private key",
    ),
    (
        "aws_secret_key",
        re.compile(
            r"(?i:aws_?secret_?(?:access_?)?key)[\"']?\s*[:=]+\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        1,
        "secret",
    ),
    ("slack_webhook", re.compile(r"https://hooks\.slack\.com/services/[\w/-]{20,}"), 0, "hooks.slack"),
    ("azure_storage_key", re.compile(r"AccountKey=([A-Za-z0-9+/]{86}==)"), 1, "accountkey="),
    ("twilio_key", re.compile(r"(?<![\w])(?:AC|SK)[0-9a-f]{32}(?![\w])"), 0, "ac|sk"),
    ("mailchimp_key", re.compile(r"(?<![\w])[0-9a-f]{32}-us[0-9]{1,2}(?![\w])"), 0, "-us"),
    ("telegram_bot_token", re.compile(r"(?<![\w:])[0-9]{8,10}:AA[0-9A-Za-z_-]{33}(?![\w-])"), 0, ":aa"),
    ("bearer_token", re.compile(r"(?i:\bbearer)\s+([A-Za-z0-9._~+/-]{20,}=*)"), 1, "bearer"),
    # The password of credentials in a URL: scheme://user:password@host.
    ("basic_auth", re.compile(r"(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s:@/<>\"']+:([^\s:@/<>\"']+)@"), 1,
     "://"),
)  # fmt: skip

# Secret-sounding names (detect-secrets' KeywordDetector list, plus a few), matched as a part of an
# identifier: `aws_secret_key`, `SUPER_SECRET_VALUES`, `dbPassword`, but not `passenger` or
# `max_tokens`.
_KEYWORD_TEXT = (
    "apikey api_key appkey app_key authkey auth_key servicekey service_key applicationkey application_key "
    "accountkey account_key dbkey db_key databasekey database_key clientkey client_key secretkey secret_key "
    "accesskey access_key privatekey private_key privkey priv_key db_pass keypass passwd password passphrase "
    "pass pwd secret secrets secrete secreto token auth_token access_token refresh_token credential "
    "credentials contrasena contraseña"
)
_KEYWORDS = _KEYWORD_TEXT.split()
_KEYWORD_CUES = ("key", "pass", "pwd", "secret", "token", "credential", "contrase")
# A name is letters, digits, `_`, `-`, `.` (and `::` for YAML-ish keys); the operator is `=`, `:`,
# `:=`, `=>` or a comparison; the value is quoted, or one bare token.
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.<:-])(?P<name>[A-Za-z_][A-Za-z0-9_.:-]{0,80}?)(?P<close>[\]'\"]{0,2})[ \t]*"
    r"(?P<op>:=|=>|[!=]={1,2}|=|:)[ \t]*@?(?:!![a-z]+[ \t]+)?"
    r"(?:(?P<q>['\"`])(?P<qvalue>[^'\"`\s]*)(?P=q)|(?P<value>[^\s'\"`,;]+))"
)
_NAME_PARTS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# Names that hold something about a secret, not the secret: its length, where it is, its type.
_NOT_SECRET_NAME = re.compile(
    r"(?i:(?:^|[_.-])(?:id|ids|max|min|count|num|number|len|length|size|limit|type|kind|name|file|path|url|"
    r"uri|endpoint|header|field|prompt|policy|format|hint|rule|rules|reset|expiry|expires|expiration|ttl|"
    r"timeout|label|placeholder|env|var|input|usage|budget|encoder|tokenizer)(?:$|[_.-]))"
    r"|(?:Id|ID|Url|Name|Path|File|Count|Length|Type)$"
)
_PLACEHOLDER_TEXT = (
    "none null nil true false undefined undef string str required optional redacted secret password "
    "token example dummy test todo changeme your_password your_token your_api_key xxx xxxx"
)
_PLACEHOLDER_VALUES = frozenset(_PLACEHOLDER_TEXT.split())
_HEX = frozenset("0123456789abcdefABCDEF")
_QUOTED = re.compile(r"(['\"])([A-Za-z0-9+/=_-]{6,})\1")
# A config line: `key: value` or `key = value` with one token as the value (YAML, INI, .env).
_CONFIG_LINE = re.compile(
    r"(?m)^[+-]?[ \t]*[A-Za-z_][\w.-]{0,80}[ \t]*[:=][ \t]*([A-Za-z0-9+/=_-]{6,})[ \t]*$"
)
_ENTROPY_CANDIDATE = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_=-]{20,}(?![A-Za-z0-9+/_=-])")
# `id = '…'`, `user_id: …`: what follows an id-named key is an identifier (detect-secrets' filter).
_ID_BEFORE = re.compile(r"(?i)(?<![a-z0-9])(?:[a-z0-9_.-]*[_.-])?ids?['\"\]]?[ \t]*(?::=?|=>?)[ \t]*['\"]?$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_SEQUENCES = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/",
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ+/",
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "01234567890123456789",
    "0123456789ABCDEF0123456789ABCDEF",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ=/",
)
_REFERENCE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")
_TRAILING_WORD = re.compile(r"\s+[a-z]+$")


def shannon_entropy(s: str) -> float:
    """Bits per character of ``s``'s own character distribution."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def hex_entropy(s: str) -> float:
    """Entropy of a hex string; a plain number loses 1.2 / log2(length) bits, as in detect-secrets:
    digits alone are far more often a count or a date than a key."""
    h = shannon_entropy(s)
    if len(s) > 1 and s.isdigit():
        h -= 1.2 / math.log2(len(s))
    return h


def _sequential(s: str) -> bool:
    up = s.upper()
    return any(up in seq for seq in _SEQUENCES)


def _id_before(text: str, start: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    return bool(_ID_BEFORE.search(text, max(line_start, start - 120), start))


def _continued(text: str, line_start: int, line_end: int) -> bool:
    """Whether the next line is more indented than this one: a continuation of its value."""
    if line_end >= len(text) - 1:
        return False
    nxt = text[line_end + 1 : text.find("\n", line_end + 1) % (len(text) + 1)]
    if not nxt.strip():
        return False
    line = text[line_start:line_end]
    indent = len(line) - len(line.lstrip(" \t+-"))
    return len(nxt) - len(nxt.lstrip(" \t")) > indent


def _secret_name(name: str) -> bool:
    """Whether an identifier names a secret: one of ``_KEYWORDS`` as a part of it, and no part that
    makes it metadata (``password_min_length``, ``token_url``, ``api_key_id``)."""
    low = name.lower()
    if not any(c in low for c in _KEYWORD_CUES) or _NOT_SECRET_NAME.search(name):
        return False
    # Parts split at `_ - . :` and at camel-case humps, rejoined in runs so that `api_key` and
    # `ApiKey` both give "apikey" and "api_key".
    parts = [p.lower() for p in _NAME_PARTS.findall(name)]
    for i in range(len(parts)):
        for j in range(i + 1, min(i + 4, len(parts)) + 1):
            if "".join(parts[i:j]) in _KEYWORD_SET or "_".join(parts[i:j]) in _KEYWORD_SET:
                return True
    return False


_KEYWORD_SET = frozenset(_KEYWORDS)


def _secret_value(value: str, quoted: bool) -> bool:
    """Whether an assigned value can be a secret: not empty or a placeholder (``None``,
    ``${TOKEN}``, ``<password>``, ``****``), not a reference (``os.environ["X"]``, ``get_key()``)."""
    v = value.strip()
    if len(v) < (4 if quoted else 6) or v.lower() in _PLACEHOLDER_VALUES:
        return False
    if v[0] in "$%{<" or v.endswith(("}", ">")) or len(set(v)) <= 2:
        return False
    for a, b in ("()", "[]"):
        if a in v and b in v and v.index(a) < v.index(b):
            return False
    if not quoted:
        if any(c in v for c in "([{"):
            return False  # os.environ["KEY"], get_key(): the bare value stopped at a quote or a call
        # A bare word is prose ("Password: required"); a bare secret has a digit, a symbol or mixed case.
        if v.isalpha() and (v.islower() or v.isupper() or v.istitle()):
            return False
        if _REFERENCE.fullmatch(v):
            return False  # settings.API_KEY, self.token, package.module:function: a reference
    return True


class SecretsOptions(ScannerOptions):
    action: Action = Field("redact", description="What to do with this scanner's findings.")
    entropy: bool = Field(True, description="Also report unknown high-entropy strings.")
    entropy_threshold: float = Field(
        4.0,
        ge=0,
        le=8,
        description="Bits per character above which a free-standing token of 24+ characters that mixes lower "
        "case, upper case and digits counts as a secret. Random base64 scores about 4.5–5.5, English words "
        "and identifiers stay under 3.8.",
    )
    entropy_min_length: int = Field(
        24, ge=12, description="Shortest free-standing token the entropy check looks at."
    )
    base64_threshold: float = Field(
        4.5,
        ge=0,
        le=8,
        description="Bits per character above which a quoted string, or the value of a `key: value` / "
        "`key = value` config line, of base64 characters counts as a secret (detect-secrets' limit).",
    )
    hex_threshold: float = Field(
        3.0,
        ge=0,
        le=8,
        description="The same for hex strings (detect-secrets' limit; a plain number loses 1.2/log2(length) "
        "bits). Quoted digests and hashes in config lines are reported; hashes in prose are not. Set 4.1 to "
        "never report hex.",
    )


class SecretsScanner(_Base):
    """Known credential formats by prefix and shape, PEM private keys (whole block, or the header
    onwards when the block is cut), JWTs, bearer tokens, passwords in URLs, secret-named
    assignments (``password = …``, ``"api_key": "…"``, ``SUPER_SECRET = '…'``), and strings whose
    entropy is too high for words (quoted strings and config values at detect-secrets' limits,
    free-standing mixed-case tokens at ``entropy_threshold``). A known format written with spaces,
    tabs or line breaks inside (``AKIA IOSF ODNN 7EXA MPLE``) is found in the text's compact
    reading."""

    options: SecretsOptions

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
        found: list[Finding] = []

        def free(start: int, end: int) -> bool:
            return not any(start < f.end and f.start < end for f in found)

        def add(kind: str, start: int, end: int, score: float = 1.0, detail: str = "") -> None:
            if end > start and free(start, end):
                found.append(self._finding(kind, start, end, score, detail, f"<SECRET:{kind}>"))

        low = text.lower()
        for kind, rx, _, cues in _PREFIX_RES:
            if cues and not any(c in low for c in cues):
                continue
            for m in rx.finditer(text):
                if kind == "aws_access_key" and len(set(m.group(0)[4:])) < 6:
                    continue  # AKIAXXXXXXXXXXXXXXXX, AKIATESTTESTTESTTEST: a placeholder
                add(kind, m.start(), m.end())
        for kind, rx, group, cue in _CONTEXT_PATTERNS:
            if cue and not any(c in low for c in cue.split("|")):
                continue
            for m in rx.finditer(text):
                if kind == "basic_auth" and not _secret_value(m.group(1), quoted=True):
                    continue
                add(kind, *m.span(group))
        if any(c in low for c in _KEYWORD_CUES):
            for m in _ASSIGNMENT.finditer(text):
                if not _secret_name(m.group("name")):
                    continue
                quoted = m.group("q") is not None
                value = "qvalue" if quoted else "value"
                if _secret_value(m.group(value), quoted) and not _id_before(text, m.start("name")):
                    add("password_assignment", *m.span(value))
        if self.options.entropy:
            self._entropy(text, add)
        found += self._compact_findings(text, found)
        return self._keep(sorted(found, key=lambda f: f.start))

    def _entropy(self, text: str, add: Any) -> None:
        opts = self.options
        for rx in (_QUOTED, _CONFIG_LINE):
            for m in rx.finditer(text):
                value = m.group(2) if rx is _QUOTED else m.group(1)
                start = m.start(2) if rx is _QUOTED else m.start(1)
                if _sequential(value) or _UUID.search(value) or _id_before(text, start):
                    continue
                if rx is _CONFIG_LINE and _continued(text, m.start(), m.end()):
                    continue  # a multi-line value (INI, YAML): this token is only its first line
                if set(value) <= _HEX:
                    h, limit, kind = hex_entropy(value), opts.hex_threshold, "high_entropy_hex"
                else:
                    h, limit, kind = shannon_entropy(value), opts.base64_threshold, "high_entropy"
                if h >= limit:
                    add(
                        kind, start, start + len(value), min(1.0, 0.6 + (h - limit) / 4), f"{h:.2f} bits/char"
                    )
        for m in _ENTROPY_CANDIDATE.finditer(text):
            token = m.group(0)
            if len(token) < opts.entropy_min_length or _id_before(text, m.start()):
                continue
            # Identifiers, words and paths lack one of these classes; keys have all three.
            if not (re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"\d", token)):
                continue
            h = shannon_entropy(token)
            if h >= opts.entropy_threshold:
                score = min(1.0, 0.5 + (h - opts.entropy_threshold) / 2)
                add("high_entropy", m.start(), m.end(), score, f"{h:.2f} bits/char")

    def _compact_findings(self, text: str, found: list[Finding]) -> list[Finding]:
        """Known formats written with whitespace inside (``sk-proj-Q7wE rT9y …``, a key broken over
        lines): matched in the text with all whitespace removed, reported on the span they cover.
        Trailing lowercase words the match swallowed (``… vBn1 and that``) are given back."""
        compact = "".join(text.split())
        if len(compact) == len(text):
            return []
        low = compact.lower()
        out: list[Finding] = []
        offsets: list[int] | None = None
        for kind, _, rx, cues in _PREFIX_RES:
            if cues and not any(c in low for c in cues):
                continue
            for m in rx.finditer(compact):
                if offsets is None:
                    offsets = [i for i, c in enumerate(text) if not c.isspace()]
                start, end = offsets[m.start()], offsets[m.end() - 1] + 1
                span = text[start:end]
                if kind not in _FIXED_LENGTH:
                    while (w := _TRAILING_WORD.search(span)) is not None:
                        span = span[: w.start()]
                    if not rx.fullmatch("".join(span.split())):
                        continue
                    end = start + len(span)
                if not any(c.isspace() for c in span) or any(
                    start < f.end and f.start < end for f in found + out
                ):
                    continue  # found as it is, or overlaps what was
                if kind == "aws_access_key" and len(set(m.group(0)[4:])) < 6:
                    continue
                out.append(
                    self._finding(kind, start, end, 1.0, "written with whitespace inside", f"<SECRET:{kind}>")
                )
        return out


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

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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
    normalizes = False  # a length, not a value
    options: TokenLimitOptions

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
        system = ctx.system_prompt
        if not system:
            return []
        for canary in ctx.canaries:
            system = system.replace(canary, " ")
        system = normalize.normalized(system).text
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

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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
    normalizes = False  # invisible characters make JSON invalid; the check must see them
    options: JsonSchemaOptions

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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

    def find(self, text: str, ctx: ScanContext) -> list[Finding]:
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
        "API keys by format, private keys, JWTs, passwords in URLs, secret-named assignments, high-entropy "
        "strings (detect-secrets' rules).",
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
