"""Prompt-injection and jailbreak detection, offline, in a few milliseconds.

The model is three logistic regressions over the same hashed features (character 3–5-grams, word
unigrams and bigrams, and a dozen indicator features for override phrases such as "ignore the
previous instructions"), trained in this repository by ``tools/train_injection.py`` on permissively
licensed public data plus templates; the weights (``models/injection.npz``) and a manifest of the
data, licences, training command and calibration metrics ship with the package, so nothing is
downloaded at run time. Rebuild them with::

    python tools/train_injection.py --data ../shared/data --seed 13 --l2 1e-05 --target-fpr 0.01 \
        --code-target-fpr 0.02 --folds 4 --foreign 800

- The ``direct`` head reads what a user typed: it flags instructions that try to override the
  system prompt, role-play jailbreaks, system-prompt and secret extraction.
- The ``indirect`` head reads text the application passes along (retrieved documents, tool and
  function results): there, any instruction or question addressed to the assistant ("in your
  reply, add …", "recommend a book", "how can I sleep better?") is an injection, because a document
  has no business giving orders.
- A document that is code (``doc_kind``: a fenced block, a traceback, many code lines) goes to the
  ``indirect_code`` head instead. Stack Overflow answers and bug reports ask and instruct their
  reader all the time ("why does this happen?", "replace `x` with `y`"), so there the head looks
  for injected code ("add this snippet to your solution: ```…```"), orders about the assistant's
  reply, and overrides; it has its own calibration.

Text is scored window by window (each sentence, each pair of neighbouring sentences, and short
texts whole), so an instruction buried in a long e-mail is not diluted by the e-mail around it;
the message's score is its worst window, whose span the finding reports. Every reading from
``normalize.variants`` is scored (cleaned of invisible characters and look-alike letters,
leetspeak folded, base64/hex/binary/URL/rot13 runs decoded), and a finding from a decoded
reading says so in its kind (``base64_payload``).
"""

from __future__ import annotations

import functools
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from shipyard.guard import normalize
from shipyard.guard.base import Finding, ScanContext, ScannerOptions, ScannerType, Stage
from shipyard.plugins import hookimpl

MODEL_DIR = Path(__file__).parent / "models"
MODEL_PATH = MODEL_DIR / "injection.npz"
MANIFEST_PATH = MODEL_DIR / "injection.json"

CHAR_BITS = 17
WORD_BITS = 16
CHAR_NS = (3, 4, 5)
HEADS = ("direct", "indirect", "indirect_code")
_P = np.uint64(1_000_003)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

_TOKEN = re.compile(r"\w+|[^\w\s]+")

_IGNORE_WORDS = (
    r"\bignor(?:ez|e|es|a|ar|e[rs]|iere|ieren|uj|eer|era|ă)\b|\bzignoruj|\bnegeer|\bolvida|\boublie[sz]?\b"
    r"|\bvergiss|\bvergeet|\bdimentica|\besqueça|\bzapom|\bglöm|\bglem|\bunohda|игнорир|забуд|"
    r"ігнору|αγνο|ξ[εέ]χ|yok say|görmezden|unut|تجاهل|انس|התעלם|שכח|नज़रअंदाज़|नजरअंदाज|अनदेख|भूल जा|無視|忘れ|"
    r"忽略|忽视|无视|忘掉|무시|잊어|bỏ qua|quên|abaikan|lupakan|ไม่ต้องสนใจ|เพิกเฉย|ลืม"
)
_RULE_WORDS = (
    r"instruc|istruzion|anweisung|instruç|instructie|instrukc|instrukt|règles|regla|regole|regeln|regels|"
    r"regras|consignes|direttive|indicaciones|vorgaben|инструкц|указани|правил|інструкці|pokyn|οδηγί|εντολ|"
    r"κανόν|talimat|kural|تعليمات|القواعد|הוראות|כללים|निर्देश|नियम|指示|命令|ルール|指令|规则|規則|지시|지침|"
    r"명령|규칙|hướng dẫn|quy tắc|instruksi|aturan|คำสั่ง|กฎ|ohjee|utasítás"
)
_IGNORE_STEMS = (
    "ignor",
    "negeer",
    "olvida",
    "oublie",
    "vergiss",
    "vergeet",
    "dimentica",
    "esqueç",
    "zapom",
    "glöm",
    "glem",
    "unohda",
    "игнор",
    "забуд",
    "ігнор",
    "αγνο",
    "ξεχ",
    "ξέχ",
    "yok say",
    "görmezden",
    "unut",
    "تجاهل",
    "انس",
    "התעלם",
    "שכח",
    "नज़रअंदाज़",
    "नजरअंदाज",
    "अनदेख",
    "भूल जा",
    "無視",
    "忘れ",
    "忽略",
    "忽视",
    "无视",
    "忘掉",
    "무시",
    "잊어",
    "bỏ qua",
    "quên",
    "abaikan",
    "lupakan",
    "ไม่ต้องสนใจ",
    "เพิกเฉย",
    "ลืม",
)
_SECRET_STEMS = (
    "mot de passe",
    "contrase",
    "passwort",
    "senha",
    "wachtwoord",
    "пароль",
    "hasł",
    "heslo",
    "κωδικ",
    "şifre",
    "كلمة",
    "סיסמ",
    "पासवर्ड",
    "パスワード",
    "비밀번호",
    "암호",
    "密码",
    "密碼",
    "mật khẩu",
    "kata sandi",
    "รหัสผ่าน",
    "lösenord",
    "prompt",
    "системн",
    "システムプロンプト",
    "시스템 프롬프트",
    "系统提示",
    "segreta",
    "secrète",
    "secreta",
    "schlüssel",
    "ключ",
    "秘密の鍵",
    "비밀 키",
    "秘密密钥",
)

# Indicator features: phrases that carry most of the signal in few words, so the model still
# fires on a short attack inside a long benign window. Each is one feature (present or not).
HAND_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "override",
        r"\b(?:ignore|disregard|forget|skip|bypass|override|overlook|neglect|drop|abandon)\b[^.!?\n]{0,40}?"
        r"\b(?:instructions?|rules|directions|guidelines|prompts?|constraints|commands|programming|"
        r"restrictions|directives|orders|context|policies|policy|guidance)\b",
    ),
    (
        "new_instructions",
        r"\b(?:new|updated|real|actual|true|secret|hidden)\s+(?:instructions?|task|orders|directives?|rules)\b"
        r"|\bfrom now on\b|\binstead,?\s+(?:you|say|respond|reply|output|print|write)\b",
    ),
    (
        "role_play",
        r"\byou are (?:now|no longer|free|going to (?:act|pretend|be))\b|\bact as (?:if|an?|my)\b"
        r"|\bpretend (?:to be|you|that)\b|\brole-?play\b|\bimagine (?:you are|you're|that you)\b"
        r"|\bstay in character\b|\bin character\b",
    ),
    (
        "jailbreak",
        r"\bdan\b|\bdo anything now\b|\bdeveloper mode\b|\bjailbr(?:eak|oken)\b|\bgod mode\b|\bunfiltered\b"
        r"|\buncensored\b|\bno (?:restrictions|limits|limitations|filters|rules|boundaries|guidelines)\b"
        r"|\bwithout (?:any )?(?:restrictions|filters|censorship|limitations|rules)\b|\bunrestricted\b",
    ),
    (
        "system",
        r"\bsystem (?:prompt|message|instructions?|override|mode)\b|\b(?:initial|original|hidden|secret|"
        r"previous|above) (?:prompt|instructions)\b|\[\s*system\s*\]|<\|?(?:im_start|system)\|?>"
        r"|#{2,}\s*(?:system|instruction)|\badmin(?:istrator)? (?:mode|override|access)\b|\bsudo\b",
    ),
    (
        "reveal",
        r"\b(?:reveal|print|show|repeat|output|tell me|leak|disclose|spell|give me|share|write down|recite)\b"
        r"[^.!?\n]{0,30}?\b(?:password|secret|key|system prompt|prompt|instructions|confidential|"
        r"credentials|token)\b",
    ),
    (
        "addressed_to_ai",
        r"\b(?:ai|assistant|model|chatbot|language model|llm|gpt|bot)s?\b[^.!?\n]{0,20}?"
        r"\b(?:reading|processing|summari[sz]ing|that reads)\b"
        r"|\bin your (?:response|reply|answer|message|output)\b"
        r"|\b(?:your|the) (?:response|reply|answer)\b",
    ),
    (
        "output_control",
        r"\b(?:respond|reply|answer|output|say|print|write)\s+(?:only|just|exactly|with|in)\b"
        r"|\b(?:start|begin|end) your (?:response|reply|answer|message)\b",
    ),
    ("hypothetical", r"\bhypothetical(?:ly)?\b|\bfor (?:educational|research) purposes\b|\bfictional\b"),
    (
        "obey",
        r"\byou (?:must|will|shall|have to) (?:now )?(?:obey|comply|answer|follow|do)\b"
        r"|\b(?:do not|don't|never) (?:refuse|decline|warn|mention that)\b|\bno matter what\b",
    ),
    ("delimiters", r"-{5,}|={5,}|\*{5,}|#{5,}|\bend of (?:document|text|input|context|prompt)\b"),
    (
        "foreign_override",
        # "Ignore / forget … instructions / rules" in other languages, either word order (Korean
        # and Japanese put the verb last); scripts without spaces get no word boundaries.
        rf"(?:{_IGNORE_WORDS})[^.!?。\n]{{0,40}}?(?:{_RULE_WORDS})"
        rf"|(?:{_RULE_WORDS})[^.!?。\n]{{0,24}}?(?:{_IGNORE_WORDS})",
    ),
    (
        "foreign_secret",
        # The password or the system prompt, named in another language.
        r"mot de passe|contrase(?:ñ|n)a|passwort|\bsenha|wachtwoord|пароль|\bhasł|\bheslo|κωδικ[όο]|şifre|"
        r"كلمة (?:المرور|السر)|סיסמ|पासवर्ड|パスワード|비밀번호|암호|密码|密碼|mật khẩu|kata sandi|รหัสผ่าน|"
        r"lösenord|prompt (?:système|del sistema|di sistema|de sistema|do sistema)|systemprompt|"
        r"системн\w* промпт|システムプロンプト|시스템 프롬프트|系统提示|chiave segreta|clé secrète|"
        r"clave secreta|geheimen schlüssel|секретн\w* ключ|秘密の鍵|비밀 키|秘密密钥",
    ),
)
_HAND = tuple(re.compile(p, re.IGNORECASE) for _, p in HAND_PATTERNS)
# Substrings each pattern cannot match without (on lowercased text), as groups that must each have
# one present: a pattern whose groups are not all met is skipped, which saves most of the
# regular-expression time on ordinary text.
_OVERRIDE_NOUNS = (
    "instruction",
    "rule",
    "direction",
    "guideline",
    "prompt",
    "constraint",
    "command",
    "programming",
    "restriction",
    "directive",
    "order",
    "context",
    "polic",
    "guidance",
)
_TRIGGERS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("ignor", "disregard", "forget", "skip", "bypass", "overrid", "overlook", "neglect", "drop", "abandon"),
     _OVERRIDE_NOUNS),
    (("instruction", "task", "order", "directive", "rule", "from now on", "instead"),),
    (("you are", "act as", "pretend", "role", "imagine", "character"),),
    (("dan", "do anything", "developer mode", "jailbr", "god mode", "unfiltered", "uncensored", "restriction",
      "limit", "filter", "rules", "boundar", "guideline", "censorship", "unrestricted"),),
    (("system", "prompt", "instruction", "im_start", "admin", "sudo"),),
    (("reveal", "print", "show", "repeat", "output", "tell me", "leak", "disclose", "spell", "give me",
      "share", "write down", "recite"),
     ("password", "secret", "key", "prompt", "instruction", "confidential", "credential", "token")),
    (("reading", "processing", "summari", "that reads", "in your", "response", "reply", "answer"),),
    (("respond", "reply", "answer", "output", "say", "print", "write", "start your", "begin your",
      "end your"),),
    (("hypothetical", "educational", "research", "fictional"),),
    (("you must", "you will", "you shall", "you have to", "refuse", "decline", "warn", "mention that",
      "no matter"),),
    (("-----", "=====", "*****", "#####", "end of"),),
    (_IGNORE_STEMS, tuple(_RULE_WORDS.split("|"))),
    (_SECRET_STEMS,),
)  # fmt: skip
N_HAND = len(_HAND)

# A sentence ends at . ! ? followed by a space or the end, or at a newline; a dot inside a token
# (an e-mail address, a file name, 3.14) does not end one.
_SEGMENT = re.compile(r"(?:[^\n.!?]|[.!?](?![\s.!?]|$))*(?:[.!?]+|\n|$)")
# A line of code: a statement keyword at its start, a statement end (``;``, a brace, ``):``), or an
# assignment. Indentation alone is no evidence: HTML e-mails turned into text are full of it.
_CODE_LINE = re.compile(
    r"^[ \t]*(?:def|class|import|from\s+[\w.]+\s+import|return|#include|function|const|let|var|public|"
    r"private|print\()\b|^[^\n]*(?:[;{}]|\)\s*:)[ \t]*$|^[ \t]*[\w.\[\]'\"]+\s*[+\-*/]?=\s*[^\s=]",
    re.MULTILINE,
)
_FENCE = re.compile(r"```")
_MIN_WORDS = 1
_MAX_SEGMENT = 400
_WHOLE_MAX = 800


def _lower(text: str) -> str:
    low = text.lower()
    # A few characters change length when lowered (İ); windows index the text, so keep lengths.
    return low if len(low) == len(text) else "".join(c.lower()[:1] or c for c in text)


def _char_hashes(low: str) -> list[np.ndarray]:
    """Bucket of each character n-gram, per n, indexed by start position."""
    codes = np.frombuffer(low.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    size = len(codes)
    mask = np.uint64((1 << CHAR_BITS) - 1)
    out = []
    with np.errstate(over="ignore"):
        for n in CHAR_NS:
            if size < n:
                out.append(np.zeros(0, dtype=np.int64))
                continue
            h = np.full(size - n + 1, np.uint64(n) * _MIX2, dtype=np.uint64)
            for i in range(n):
                h = h * _P + codes[i : size - n + 1 + i]
            h ^= h >> np.uint64(31)
            h *= _MIX1
            h ^= h >> np.uint64(29)
            out.append((h & mask).astype(np.int64))
    return out


_CRC_CACHE: dict[str, int] = {}


def _crc(word: str) -> int:
    h = _CRC_CACHE.get(word)
    if h is None:
        if len(_CRC_CACHE) > 200_000:  # bounded: a stream of unique tokens must not grow it forever
            _CRC_CACHE.clear()
        h = _CRC_CACHE[word] = zlib.crc32(word.encode())
    return h


def _word_hashes(low: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Token starts and ends, unigram buckets, and bigram buckets (bigram k = tokens k, k+1)."""
    mask = np.uint64((1 << WORD_BITS) - 1)
    matches = list(_TOKEN.finditer(low))
    n = len(matches)
    starts = np.fromiter((m.start() for m in matches), dtype=np.int64, count=n)
    ends = np.fromiter((m.end() for m in matches), dtype=np.int64, count=n)
    full = np.fromiter((_crc(m.group(0)) for m in matches), dtype=np.uint64, count=n)
    uni = (full & mask).astype(np.int64)
    with np.errstate(over="ignore"):
        h = full[:-1] * _P + (full[1:] ^ np.uint64(0x5BD1E995))
        h ^= h >> np.uint64(31)
        h *= _MIX1
        h ^= h >> np.uint64(29)
    bi = (h & mask).astype(np.int64)
    return starts, ends, uni, bi


_NO_SPANS = np.zeros((0, 2), dtype=np.int64)


def _hand_spans(low: str) -> list[np.ndarray]:
    out = []
    for rx, triggers in zip(_HAND, _TRIGGERS, strict=True):
        if not all(any(t in low for t in group) for group in triggers):
            out.append(_NO_SPANS)
            continue
        spans = [(m.start(), m.end()) for m in rx.finditer(low)]
        out.append(np.array(spans, dtype=np.int64).reshape(-1, 2) if spans else _NO_SPANS)
    return out


def features(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The feature vector of ``text`` as one window, sparse: (char buckets, char value, word buckets,
    word value, hand indicators). ``InjectionModel.window_logits`` over the whole text computes the
    same dot product; training uses this form."""
    low = _lower(text)
    chars = np.concatenate(_char_hashes(low))
    _, _, uni, bi = _word_hashes(low)
    words = np.concatenate([uni, bi])
    hand = np.array([1.0 if len(s) else 0.0 for s in _hand_spans(low)])
    cval = 1.0 / math.sqrt(len(chars)) if len(chars) else 0.0
    wval = 1.0 / math.sqrt(len(words)) if len(words) else 0.0
    return chars, np.array(cval), words, np.array(wval), hand


def doc_kind(text: str) -> str:
    """``code`` for a text with a fenced block, a traceback, or at least three lines of code making a
    fifth of its lines (a Stack Overflow answer, a bug report, a source file); else ``prose``.

    The indirect head hands code to ``indirect_code``: such documents tell their reader what to do
    ("add a `,` after …", "you need to call `strip()`") and ask questions, which in prose would be
    instructions to the assistant."""
    if "```" in text or "Traceback (most recent call last)" in text:
        return "code"
    lines = sum(1 for line in text.splitlines() if line.strip())
    if lines < 3:
        return "prose"
    n = sum(1 for _ in _CODE_LINE.finditer(text))
    return "code" if n >= 3 and n * 5 >= lines else "prose"


def segments(text: str) -> list[tuple[int, int]]:
    """Sentence-ish spans; long lines are cut into pieces of at most ``_MAX_SEGMENT`` characters."""
    out: list[tuple[int, int]] = []
    for m in _SEGMENT.finditer(text):
        a, b = m.start(), m.end()
        if not text[a:b].strip():
            continue
        while b - a > _MAX_SEGMENT:
            cut = text.rfind(" ", a + _MAX_SEGMENT // 2, a + _MAX_SEGMENT)
            cut = cut if cut > a else a + _MAX_SEGMENT
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return out


def windows(text: str, blocks: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Windows to score: every segment, every two neighbouring segments, and a short text whole; with
    ``blocks`` (the indirect head), also every fenced code block with the line before it."""
    segs = segments(text)
    # Fragments of one or two words ("Hi,", "Regards.") carry no intent and only add noise.
    spans = {(a, b) for a, b in segs if len(text[a:b].split()) >= _MIN_WORDS}
    spans.update((segs[i][0], segs[i + 1][1]) for i in range(len(segs) - 1))
    if len(text) <= _WHOLE_MAX or not segs:
        spans.add((0, len(text)))
    # A fenced code block with the line that introduces it ("add this to your code: ```…```"): what
    # the code does and who is told to run it only show together.
    fences = [m.start() for m in _FENCE.finditer(text)] if blocks else []
    for a, b in zip(fences[::2], fences[1::2], strict=False):
        intro = text.rfind("\n", 0, max(a - 1, 0)) + 1
        spans.add((intro, min(b + 3, len(text), intro + _WHOLE_MAX)))
    ordered = sorted(spans)
    return (
        np.array([s[0] for s in ordered], dtype=np.int64),
        np.array([s[1] for s in ordered], dtype=np.int64),
    )


@dataclass(frozen=True)
class Head:
    char: np.ndarray
    word: np.ndarray
    hand: np.ndarray
    bias: float


class InjectionModel:
    """The trained weights; ``score`` is the worst window's probability and its span."""

    def __init__(self, heads: dict[str, Head]) -> None:
        self.heads = heads

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> InjectionModel:
        if not path.exists():
            raise FileNotFoundError(
                f"injection model {path} is missing; rebuild it with `python tools/train_injection.py`"
            )
        with np.load(path) as z:
            heads = {
                h: Head(
                    z[f"{h}_char"].astype(np.float64),
                    z[f"{h}_word"].astype(np.float64),
                    z[f"{h}_hand"].astype(np.float64),
                    float(z[f"{h}_bias"]),
                )
                for h in HEADS
                if f"{h}_bias" in z.files
            }
        return cls(heads)

    def window_logits(
        self, text: str, head: str, starts: np.ndarray | None = None, ends: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logit of every window of ``text`` (default: ``windows`` for the head), with the windows."""
        w = self.heads[head]
        if starts is None or ends is None:
            starts, ends = windows(text, blocks=head != "direct")
        low = _lower(text)
        csum = np.zeros(len(starts))
        ccount = np.zeros(len(starts))
        for n, idx in zip(CHAR_NS, _char_hashes(low), strict=True):
            cum = np.concatenate([[0.0], np.cumsum(w.char[idx])])
            count = np.clip(ends - n + 1 - starts, 0, None)
            lo = np.minimum(starts, len(idx))
            hi = np.minimum(starts + count, len(idx))
            csum += cum[hi] - cum[lo]
            ccount += hi - lo
        tstarts, tends, uni, bi = _word_hashes(low)
        k_lo = np.searchsorted(tstarts, starts, side="left")
        k_hi = np.searchsorted(tends, ends, side="right")
        n_uni = np.clip(k_hi - k_lo, 0, None)
        ucum = np.concatenate([[0.0], np.cumsum(w.word[uni])])
        bcum = np.concatenate([[0.0], np.cumsum(w.word[bi])])
        wsum = ucum[k_lo + n_uni] - ucum[k_lo]
        n_bi = np.clip(n_uni - 1, 0, None)
        wsum += bcum[np.minimum(k_lo + n_bi, len(bi))] - bcum[np.minimum(k_lo, len(bi))]
        wcount = n_uni + n_bi
        logits = w.bias + csum / np.sqrt(np.maximum(ccount, 1)) + wsum / np.sqrt(np.maximum(wcount, 1))
        for j, spans in enumerate(_hand_spans(low)):
            if len(spans) and w.hand[j]:
                inside = (spans[None, :, 0] >= starts[:, None]) & (spans[None, :, 1] <= ends[:, None])
                logits += w.hand[j] * inside.any(axis=1)
        return logits, starts, ends

    def score(self, text: str, head: str) -> tuple[float, int, int]:
        """The worst window's probability and its span ``(start, end)`` in ``text``; ``indirect``
        sends code (``doc_kind``) to the ``indirect_code`` head when the model has one."""
        if not text.strip():
            return 0.0, 0, 0
        if head == "indirect" and "indirect_code" in self.heads and doc_kind(text) == "code":
            head = "indirect_code"
        logits, starts, ends = self.window_logits(text, head)
        i = int(np.argmax(logits))
        return 1.0 / (1.0 + math.exp(-float(logits[i]))), int(starts[i]), int(ends[i])


@functools.cache
def default_model() -> InjectionModel:
    return InjectionModel.load()


def manifest() -> dict[str, Any]:
    with MANIFEST_PATH.open() as f:
        data: dict[str, Any] = json.load(f)
    return data


class InjectionOptions(ScannerOptions):
    skip_roles: list[str] = Field(
        default_factory=lambda: ["system", "developer"],
        description="Message roles not scanned: the application's own instructions are trusted.",
    )
    indirect_roles: list[str] = Field(
        default_factory=lambda: ["tool", "function", "ipython", "document"],
        description="Roles whose text is data the application passes along (tool results, retrieved "
        "documents): scored by the indirect head, where any instruction to the assistant counts.",
    )


class InjectionScanner:
    """Scores every reading of the text with the head its role calls for; one finding at most."""

    stages: tuple[Stage, ...] = ("input",)

    def __init__(self, name: str, options: InjectionOptions, model: InjectionModel | None = None) -> None:
        self.name = name
        self.options = options
        self.model = model or default_model()
        self._skip = frozenset(options.skip_roles)
        self._indirect = frozenset(options.indirect_roles)

    def head_for(self, ctx: ScanContext) -> str | None:
        if ctx.role in self._skip:
            return None
        if ctx.role in self._indirect or ctx.extra.get("document"):
            return "indirect"
        return "direct"

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]:
        head = self.head_for(ctx)
        if head is None or not text.strip():
            return []
        best: tuple[float, normalize.Variant, int, int] | None = None
        for variant in normalize.variants(text):
            score, a, b = self.model.score(variant.text, head)
            if best is None or score > best[0]:
                best = (score, variant, a, b)
        if best is None or best[0] < self.options.threshold:
            return []
        score, variant, a, b = best
        start, end = variant.origin(a, b)
        plain = variant.kind == "text"
        kind = ("indirect_injection" if head == "indirect" else "injection") if plain else variant.kind
        snippet = " ".join(variant.text[a:b].split())
        snippet = snippet if len(snippet) <= 120 else snippet[:119] + "…"
        detail = f"{head} injection" + ("" if plain else f" in {variant.kind.replace('_', ' ')}")
        detail += f": {snippet!r}"
        return [Finding(self.name, kind, score, start, end, self.options.action, detail=detail)]


def make_scanner(name: str, options: Any) -> InjectionScanner:
    return InjectionScanner(name, options if isinstance(options, InjectionOptions) else InjectionOptions())


@hookimpl
def register_scanners() -> list[ScannerType]:
    return [
        ScannerType(
            "injection",
            InjectionOptions,
            make_scanner,
            ("input",),
            "Prompt injection and jailbreaks, direct (user messages) and indirect (documents and tool "
            "output), seen through encodings (base64, hex, rot13, leetspeak, homoglyphs, invisible "
            "characters); a small offline model trained in this repository.",
        )
    ]
