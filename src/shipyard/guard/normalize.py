"""Turn obfuscated text into what a model would read, so that detectors see through the tricks.

Attackers hide instructions from filters in ways a language model still reads: invisible and
bidirectional-control characters inside words, look-alike letters from other scripts (Cyrillic
``о`` for Latin ``o``), mathematical or full-width letters, leetspeak (``1gn0r3``), and payloads
encoded as base64, hex, binary, URL escapes or rot13. ``variants`` returns every reading worth
scanning, each with where it came from in the original text, so a finding can point at the span
and say what was decoded (``kind: base64_payload``).

:func:`normalized` is the one normaliser all scanners share: the value scanners (``pii``,
``secrets``, ``banned``, ``canary``, ``toxicity``, ``urls``…) read its text, so a value written with
zero-width characters, non-breaking spaces or full-width letters inside is still found, and its
offset map gives the span of the original text to redact (invisible characters included).

Everything is the standard library plus tables; it is cheap enough for the request path (a
2,000-character ASCII prompt with no encoded runs costs a few tens of microseconds).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import re
import unicodedata
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

# Zero-width, joiner, bidi-control, tag and other format characters that render as nothing but
# split a word for a filter. Unicode category Cf covers them, plus a few that are not Cf.
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_EXTRA_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")

# Look-alike letters NFKC leaves alone (other scripts). Only letters that are visually identical
# or nearly so to an ASCII letter in common fonts.
_HOMOGLYPHS: dict[str, str] = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ӏ": "l", "ь": "b", "ո": "n", "ս": "u",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԁ": "D", "Ԛ": "Q",
    "Ԝ": "W", "Ӏ": "I",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H",
    "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin extensions and symbols used as letters
    "ı": "i", "ȷ": "j", "ℓ": "l", "ſ": "s", "ꞵ": "b", "ɑ": "a", "ɩ": "i", "ʏ": "y",
}  # fmt: skip

_HOMOGLYPH_TABLE = str.maketrans(_HOMOGLYPHS)
_HOMOGLYPH_RE = re.compile("[" + re.escape("".join(_HOMOGLYPHS)) + "]")
_LETTERS = re.compile(r"[^\W\d_]+")
_ASCII_LETTER = re.compile(r"[A-Za-z]")

# Leetspeak: only applied inside tokens that mix letters with these, so numbers stay numbers.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "8": "b", "9": "g"})  # fmt: skip
# A leet token has a substitute next to a letter and at least two letters (``1gn0r3``, ``th3``);
# tokens glued to a dot and a word (e-mail addresses, domains, versions) are left alone.
_LEET_HINT = re.compile(r"[A-Za-z][013457@$89]|[013457@$89][A-Za-z]")
# Only tokens with a substitute next to a letter match, so the callback runs on few tokens.
_LEET_TOKEN = re.compile(
    r"(?<![\w@$])(?<!\w\.)(?=[\w@$]{0,19}(?:[A-Za-z][013457@$89]|[013457@$89][A-Za-z]))"
    r"[\w@$]{3,20}(?![\w@$]|\.\w)"
)

_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)
# Frequent English words: a text whose rot13 has many more of them than itself is rot13.
_COMMON = frozenset(
    [
        "the",
        "and",
        "you",
        "your",
        "to",
        "of",
        "is",
        "are",
        "in",
        "it",
        "that",
        "this",
        "for",
        "on",
        "with",
        "be",
        "not",
        "all",
        "any",
        "ignore",
        "instructions",
        "previous",
        "now",
        "tell",
        "me",
        "what",
        "how",
        "password",
        "system",
        "prompt",
        "reveal",
        "say",
        "print",
    ]
)
_WORD = re.compile(r"[A-Za-z]+")

_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX_RUN = re.compile(r"\b(?:0x)?[0-9A-Fa-f]{2}(?:[ :,]?[0-9A-Fa-f]{2}){7,}\b|(?:\\x[0-9A-Fa-f]{2}){6,}")
_BIN_RUN = re.compile(r"\b[01]{8}(?:[ ,]?[01]{8}){3,}\b")
_URL_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9._~+-]){6,}")
# Unicode tag characters (U+E0020–U+E007E) mirror ASCII but render as nothing: "ASCII smuggling".
_TAGS = re.compile("[\U000e0020-\U000e007e]{3,}")
_SPACED = re.compile(r"(?<!\S)(?:[A-Za-z][ .\-_*]){4,}[A-Za-z](?!\S)")


@dataclass(frozen=True, slots=True)
class Variant:
    """One reading of the text. ``kind`` is ``text`` (the cleaned text itself), ``leetspeak``,
    ``spaced_letters`` or ``<encoding>_payload``; ``start``/``end`` is the original span it came
    from; ``offsets[i]`` is the original index of ``text[i]`` when the variant is the whole text
    (None when it is the identity); a ``decoded`` payload maps every span to its whole run."""

    text: str
    kind: str
    start: int
    end: int
    offsets: tuple[int, ...] | None = None
    decoded: bool = False

    def origin(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``self.text[start:end]``."""
        if self.decoded:
            return self.start, self.end
        return origin_span(self.offsets, start, end)


def is_invisible(ch: str) -> bool:
    return ch in _EXTRA_INVISIBLE or (unicodedata.category(ch) == "Cf")


def origin_span(
    offsets: Sequence[int] | None, start: int, end: int, original: str | None = None
) -> tuple[int, int]:
    """The span of the original text that ``text[start:end]`` of a cleaned text came from.

    It runs from the original of the first character to the original of the last one, so every
    invisible character between them is inside; with ``original``, invisible characters right
    after the last one are taken too, so a redaction leaves nothing of an obfuscated value."""
    if offsets is None:
        return start, end
    if not offsets:
        return 0, len(original) if original is not None else 0
    start = min(max(start, 0), len(offsets) - 1)
    end = min(max(end, start + 1), len(offsets))
    a, b = offsets[start], offsets[end - 1] + 1
    if original is not None:
        while b < len(original) and is_invisible(original[b]):
            b += 1
    return a, b


@dataclass(frozen=True, slots=True)
class Normalized:
    """``original`` as a reader sees it: ``text`` is :func:`clean`'s output and ``offsets[i]`` the
    original index of ``text[i]`` (None when the two are the same, the common case).

    Every scanner that matches values (``pii``, ``secrets``, ``banned``, ``canary``…) reads
    ``text`` and reports :meth:`origin` spans, so ``4111\u00a01111…`` or an API key with a
    zero-width space inside is found, and redacted whole in the original."""

    original: str
    text: str
    offsets: tuple[int, ...] | None

    def origin(self, start: int, end: int) -> tuple[int, int]:
        return origin_span(self.offsets, start, end, self.original)


@functools.lru_cache(maxsize=64)
def _normalized(text: str) -> Normalized:
    cleaned, offsets = clean(text)
    return Normalized(text, cleaned, offsets)


def normalized(text: str) -> Normalized:
    """The one normaliser every scanner shares: invisible characters dropped, NFKC (full-width
    letters and digits, non-breaking and other Unicode spaces become ASCII), look-alike letters
    folded. ASCII text costs one ``isascii`` check; other text is cached, because every scanner of
    a route reads the same message."""
    if text.isascii():
        return Normalized(text, text, None)
    return _normalized(text)


@functools.lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    """What one non-ASCII character reads as: nothing (invisible), or its NFKC form."""
    if is_invisible(ch):
        return ""
    return "".join(c for c in unicodedata.normalize("NFKC", ch) if not is_invisible(c))


def fold_lookalikes(text: str) -> str:
    """Look-alike letters of other scripts folded to ASCII inside words that mix them with ASCII
    letters, and in words made only of look-alikes when the text around them is mostly Latin
    ("ѕуѕтем" among English words); same length, so offsets still fit. A Russian or Greek word
    in Russian or Greek text ("Игнорировать", "всё") is a word, and stays one."""
    if text.isascii() or not _HOMOGLYPH_RE.search(text):
        return text
    letters = _LETTERS.findall(text)
    latin = sum(len(w) for w in letters if w.isascii())
    mostly_latin = 2 * latin > sum(len(w) for w in letters)

    def fold(m: re.Match[str]) -> str:
        word = m.group(0)
        if word.isascii() or not _HOMOGLYPH_RE.search(word):
            return word
        if _ASCII_LETTER.search(word) or (mostly_latin and all(c in _HOMOGLYPHS for c in word)):
            return word.translate(_HOMOGLYPH_TABLE)
        return word

    return _LETTERS.sub(fold, text)


def clean(text: str) -> tuple[str, tuple[int, ...] | None]:
    """Invisible characters dropped, NFKC applied, look-alike letters folded to ASCII (inside
    words that mix scripts, see :func:`fold_lookalikes`).

    Returns the cleaned text and, when it differs from ``text``, the original index of each of
    its characters (None when nothing changed, the common case)."""
    if text.isascii():
        return text, None
    cleaned, offsets = _clean_chars(text)
    folded = fold_lookalikes(cleaned)
    if offsets is None and folded != text:
        return folded, tuple(range(len(text)))
    return folded, offsets


def _clean_chars(text: str) -> tuple[str, tuple[int, ...] | None]:
    out: list[str] = []
    offsets: list[int] = []
    changed = False
    pos = 0
    # Only the non-ASCII characters need a look; ASCII runs are copied whole.
    for m in _NON_ASCII.finditer(text):
        i = m.start()
        ch = m.group(0)
        folded = _fold_char(ch)
        if folded == ch:
            continue
        changed = True
        out.append(text[pos:i])
        offsets.extend(range(pos, i))
        out.append(folded)
        offsets.extend([i] * len(folded))
        pos = i + 1
    if not changed:
        return text, None
    out.append(text[pos:])
    offsets.extend(range(pos, len(text)))
    return "".join(out), tuple(offsets)


def _unleet(m: re.Match[str]) -> str:
    token = m.group(0)
    letters = sum(1 for c in token if c.isalpha())
    if letters < 2 or letters == len(token) or not _LEET_HINT.search(token):
        return token
    return token.translate(_LEET)


def fold_leetspeak(text: str) -> str:
    """Leet tokens (``1gn0r3``, ``p@$$w0rd``) read as letters; same length, so spans still fit.
    Tokens without letters (``2020``, ``$5``) are left alone."""
    if not _LEET_HINT.search(text):
        return text
    return _LEET_TOKEN.sub(_unleet, text)


def _printable_ratio(s: str) -> float:
    if not s:
        return 0.0
    good = sum(1 for c in s if c.isprintable() or c in "\n\t\r")
    return good / len(s)


def _as_text(raw: bytes) -> str | None:
    """Decoded bytes that read as text (mostly printable, with letters and a space), else None."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    letters = sum(1 for c in s if c.isalpha())
    if len(s) < 6 or _printable_ratio(s) < 0.95 or letters < 0.5 * len(s) or " " not in s.strip():
        return None
    return s


def _decode_base64(run: str) -> str | None:
    s = run.rstrip("=")
    if len(s) % 4 == 1:
        return None
    if not (re.search(r"[a-z]", s) and re.search(r"[A-Z0-9]", s)):
        return None  # an identifier, a hash in hex, a word: not base64 text
    padded = s + "=" * (-len(s) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _as_text(raw)


def _decode_hex(run: str) -> str | None:
    digits = re.sub(r"\\x|0x|[ :,]", "", run)
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return _as_text(bytes.fromhex(digits))
    except ValueError:
        return None


def _decode_binary(run: str) -> str | None:
    bits = re.sub(r"[ ,]", "", run)
    raw = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8))
    return _as_text(raw)


def _decode_url(run: str) -> str | None:
    if run.count("%") < 3:
        return None
    s = urllib.parse.unquote_plus(run)
    return s if _printable_ratio(s) >= 0.95 and s != run else None


def _rot13(text: str) -> str | None:
    # Plain English is common words from the start; checking a prefix keeps this cheap.
    head = _WORD.findall(text[:300])
    if len(head) < 3 or sum(1 for w in head if w.lower() in _COMMON) > 0.15 * len(head):
        return None
    words = _WORD.findall(text)
    rotated = text.translate(_ROT13)
    before = sum(1 for w in words if w.lower() in _COMMON)
    after = sum(1 for w in _WORD.findall(rotated) if w.lower() in _COMMON)
    if after >= 2 and after >= 0.2 * len(words) and after > 2 * before:
        return rotated
    return None


_DECODERS = (
    ("base64_payload", _B64_RUN, _decode_base64),
    ("hex_payload", _HEX_RUN, _decode_hex),
    ("binary_payload", _BIN_RUN, _decode_binary),
    ("url_payload", _URL_RUN, _decode_url),
)


def decode_payloads(text: str, depth: int = 2) -> list[tuple[str, int, int, str]]:
    """Encoded runs in ``text`` that decode to readable text: ``(kind, start, end, decoded)``.

    Decoded text is decoded again (``depth`` levels) because attackers nest encodings; the inner
    finding keeps the outer span."""
    found: list[tuple[str, int, int, str]] = []
    # Cheap gates before the regular expressions: hex and binary text is mostly digits, URL
    # escapes need percent signs.
    digits = sum(map(text.count, "0123456789"))
    for kind, pattern, decode in _DECODERS:
        if kind in ("hex_payload", "binary_payload") and digits < 12 and "\\x" not in text:
            continue
        if kind == "url_payload" and text.count("%") < 3:
            continue
        for m in pattern.finditer(text):
            decoded = decode(m.group(0))
            if decoded is None:
                continue
            found.append((kind, m.start(), m.end(), decoded))
            if depth > 1:
                found.extend((k, m.start(), m.end(), d) for k, _, _, d in decode_payloads(decoded, depth - 1))
    rotated = _rot13(text)
    if rotated is not None:
        found.append(("rot13_payload", 0, len(text), rotated))
    return found


def _letters_changed(text: str, cleaned: str, offsets: Sequence[int]) -> bool:
    """Whether cleaning turned a non-ASCII character into an ASCII letter (a disguised letter)."""
    return any(
        c.isascii() and c.isalpha() and not text[o].isascii() for c, o in zip(cleaned, offsets, strict=True)
    )


def variants(text: str) -> list[Variant]:
    """Every reading of ``text`` worth scanning; the first is always the cleaned whole text."""
    norm = normalized(text)
    cleaned, offsets = norm.text, norm.offsets
    if offsets is None:
        offsets_t: tuple[int, ...] | None = None
        kind = "text"
    else:
        offsets_t = offsets
        # Which trick made the difference matters to whoever reads the finding; full-width
        # punctuation and Unicode spaces alone (Chinese, Japanese text) are no trick.
        if any(is_invisible(c) for c in text):
            kind = "invisible_characters"
        elif _letters_changed(text, cleaned, offsets):
            kind = "homoglyphs"
        else:
            kind = "text"
    out = [Variant(cleaned, kind, 0, len(text), offsets_t)]
    if offsets is not None:
        for m in _TAGS.finditer(text):
            smuggled = "".join(chr(ord(c) - 0xE0000) for c in m.group(0))
            out.append(Variant(smuggled, "unicode_tags_payload", m.start(), m.end(), None, decoded=True))
    leet = fold_leetspeak(cleaned)
    if leet != cleaned:
        out.append(Variant(leet, "leetspeak", 0, len(text), offsets_t))
    spaced = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group(0)), cleaned)
    if spaced != cleaned:
        out.append(Variant(spaced, "spaced_letters", 0, len(text), None, decoded=True))
    for dkind, start, end, decoded in decode_payloads(cleaned):
        o_start, o_end = out[0].origin(start, end)
        out.append(Variant(decoded, dkind, o_start, o_end, None, decoded=True))
    return out


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")
