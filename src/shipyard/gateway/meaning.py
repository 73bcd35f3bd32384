"""The semantic cache's false-hit guard: what two prompts must share, beyond being similar, before
one's answer may be served for the other (docs/cache.md, "Semantic matching").

Embeddings put "What is 17 times 23?" and "What is 17 times 24?" next to each other: they share
every word but one, and the one that differs is what the answer depends on. So a semantic match is
refused, whatever its similarity, when the two conversations differ in:

- **numbers**: every number, in digits or words ("3" and "three" are the same number; "1,000" and
  "1000" too), ordinals included ("second tallest");
- **negation**: how many negations each holds ("not", "no", "never", "without", "n't", "cannot"…,
  and their counterparts in French, German, Spanish, Italian, Portuguese and Dutch);
- **dates and times**: months, weekdays, seasons, holidays and relative days ("today", "next week");
- **names**: a capitalised word (a person, place, product, language) of one prompt that the other
  does not contain at all;
- **units**: units of measure and currencies (km and mile, Celsius and Fahrenheit, dollar and euro…);
- **polarity**: one prompt holds a word whose opposite (best/worst, increase/decrease, before/
  after, largest/smallest, buy/sell…) the other holds instead;
- **language**: the two are written in different languages (by script, then by common words).

The rule is deliberately one-sided: it may refuse a true paraphrase ("the French capital" against
"the capital of France" differ in names), which costs one model call; it must not accept a prompt
that needs another answer, which would serve a wrong answer. ``benchmarks/cache.py`` measures both
on the labelled pairs in ``tests/data/cache_pairs.jsonl``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)?|[%°$€£¥₹]", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?:;\n]\s*$")


def _wordlist(text: str) -> list[str]:
    """The words of a space-separated literal (long word lists read better as one string)."""
    return text.split()


_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        _wordlist(
            "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
            "sixteen seventeen eighteen nineteen twenty"
        )
    )
}
_NUMBER_WORDS.update(
    {
        "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
        "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
        "billion": "1000000000", "dozen": "12", "half": "0.5", "quarter": "0.25", "twice": "x2",
        "double": "x2", "triple": "x3", "single": "1", "couple": "2", "both": "2",
        "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
        "sixth": "6th", "seventh": "7th", "eighth": "8th", "ninth": "9th", "tenth": "10th",
        "once": "x1", "thrice": "x3",
    }
)  # fmt: skip
_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$")

_NEGATIONS = set(
    _wordlist(
        "not no never none nobody nothing nowhere neither nor without cannot cant dont doesnt didnt isnt "
        "arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt "
        "pas jamais aucun aucune rien personne sans "  # French (ne … pas: counted once, by "pas")
        "nicht kein keine keinen keiner keines nie niemals nichts ohne "  # German
        "nunca nada ningún ninguno ninguna nadie sin "  # Spanish (and "no")
        "non mai nessuno nessuna niente senza "  # Italian
        "não nem nenhum nenhuma sem "  # Portuguese
        "niet geen nooit niets zonder"  # Dutch
    )
)

_DATES = set(
    _wordlist(
        "january february april june july august september october november december "
        "monday tuesday wednesday thursday friday saturday sunday weekday weekend weekends "
        "today tomorrow yesterday tonight morning afternoon evening night midnight noon "
        "spring summer autumn fall winter christmas easter ramadan hanukkah diwali thanksgiving "
        "halloween new-year"
    )
)
_CASE_SENSITIVE_DATES = {"May", "March"}  # the months; "may" and "march" are also verbs
_RELATIVE = {"next", "last", "previous", "this", "coming", "past"}
_PERIODS = {"week", "month", "year", "quarter", "weekend", "season", "decade", "century"}

_UNITS = {
    # length
    "km": "km", "kilometer": "km", "kilometers": "km", "kilometre": "km", "kilometres": "km",
    "m": "m", "meter": "m", "meters": "m", "metre": "m", "metres": "m",
    "cm": "cm", "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "mm": "mm", "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
    "mile": "mile", "miles": "mile", "mi": "mile", "nautical": "nautical",
    "foot": "ft", "feet": "ft", "ft": "ft", "inch": "in", "inches": "in",
    "yard": "yd", "yards": "yd", "yd": "yd", "light": "light",
    # mass
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "kilo": "kg", "kilos": "kg",
    "g": "g", "gram": "g", "grams": "g", "mg": "mg", "milligram": "mg", "milligrams": "mg",
    "lb": "lb", "lbs": "lb", "pound": "lb/gbp", "pounds": "lb/gbp", "ounce": "oz", "ounces": "oz",
    "oz": "oz", "ton": "t", "tons": "t", "tonne": "t", "tonnes": "t", "stone": "st",
    # volume
    "l": "l", "liter": "l", "liters": "l", "litre": "l", "litres": "l",
    "ml": "ml", "milliliter": "ml", "milliliters": "ml", "millilitre": "ml", "millilitres": "ml",
    "gallon": "gal", "gallons": "gal", "gal": "gal", "pint": "pint", "pints": "pint",
    "quart": "quart", "quarts": "quart", "cup": "cup", "cups": "cup",
    "tablespoon": "tbsp", "tablespoons": "tbsp", "tbsp": "tbsp",
    "teaspoon": "tsp", "teaspoons": "tsp", "tsp": "tsp",
    # temperature
    "celsius": "°c", "centigrade": "°c", "fahrenheit": "°f", "kelvin": "k", "°": "°",
    # time
    "second": "s", "seconds": "s", "sec": "s", "secs": "s", "ms": "ms", "millisecond": "ms",
    "milliseconds": "ms", "minute": "min", "minutes": "min", "min": "min", "mins": "min",
    "hour": "h", "hours": "h", "hr": "h", "hrs": "h", "day": "day", "days": "day",
    "week": "week", "weeks": "week", "weekly": "week", "month": "month", "months": "month",
    "monthly": "month", "year": "year", "years": "year", "yearly": "year", "annual": "year",
    "annually": "year", "daily": "day", "hourly": "h",
    # data, energy, speed
    "byte": "B", "bytes": "B", "kb": "kB", "mb": "MB", "gb": "GB", "tb": "TB", "kib": "KiB",
    "mib": "MiB", "gib": "GiB", "bit": "bit", "bits": "bit", "mbps": "Mbps", "gbps": "Gbps",
    "watt": "W", "watts": "W", "kw": "kW", "kwh": "kWh", "volt": "V", "volts": "V", "amp": "A",
    "amps": "A", "calorie": "kcal", "calories": "kcal", "kcal": "kcal", "joule": "J", "joules": "J",
    "mph": "mph", "kph": "km/h", "kmh": "km/h", "knot": "kn", "knots": "kn",
    # money and ratios
    "dollar": "usd", "dollars": "usd", "usd": "usd", "$": "usd", "euro": "eur", "euros": "eur",
    "eur": "eur", "€": "eur", "gbp": "gbp", "£": "gbp", "sterling": "gbp", "yen": "jpy",
    "jpy": "jpy", "¥": "jpy", "rupee": "inr", "rupees": "inr", "inr": "inr", "₹": "inr",
    "franc": "chf", "francs": "chf", "chf": "chf", "yuan": "cny", "renminbi": "cny",
    "canadian": "cad", "australian": "aud", "percent": "%", "per": "per", "%": "%",
    "percentage": "%",
}  # fmt: skip

_POLAR_PAIRS = [
    ("best", "worst"), ("better", "worse"), ("good", "bad"), ("most", "least"), ("more", "less"),
    ("more", "fewer"), ("max", "min"), ("maximum", "minimum"), ("highest", "lowest"),
    ("high", "low"), ("higher", "lower"), ("largest", "smallest"), ("biggest", "smallest"),
    ("large", "small"), ("big", "small"), ("larger", "smaller"), ("bigger", "smaller"),
    ("longest", "shortest"), ("long", "short"), ("longer", "shorter"), ("tallest", "shortest"),
    ("fastest", "slowest"), ("fast", "slow"), ("faster", "slower"), ("cheapest", "fastest"),
    ("cheap", "expensive"), ("cheapest", "priciest"), ("cheaper", "pricier"),
    ("increase", "decrease"), ("increase", "reduce"), ("raise", "lower"), ("add", "remove"),
    ("enable", "disable"), ("open", "close"), ("open", "save"), ("start", "stop"),
    ("buy", "sell"), ("invest", "sell"), ("before", "after"), ("above", "below"),
    ("over", "under"), ("first", "last"), ("early", "late"), ("earlier", "later"),
    ("hot", "cold"), ("hard", "soft"), ("warm", "cool"), ("boiling", "freezing"),
    ("true", "false"), ("positive", "negative"), ("pros", "cons"), ("advantages", "disadvantages"),
    ("benefits", "risks"), ("safe", "dangerous"), ("healthy", "unhealthy"), ("legal", "illegal"),
    ("allowed", "forbidden"), ("accept", "reject"), ("win", "lose"), ("import", "export"),
    ("upload", "download"), ("encrypt", "decrypt"), ("encode", "decode"), ("login", "logout"),
    ("install", "uninstall"), ("subscribe", "unsubscribe"), ("left", "right"), ("up", "down"),
    ("in", "out"), ("inside", "outside"), ("north", "south"), ("east", "west"), ("fall", "built"),
    ("fell", "built"), ("morning", "evening"), ("minimum", "average"), ("maximum", "recommended"),
    ("shorter", "longer"), ("to", "from"), ("sunrise", "sunset"), ("import", "export"),
]  # fmt: skip
_POLAR: dict[str, set[str]] = {}
for _a, _b in _POLAR_PAIRS:
    _POLAR.setdefault(_a, set()).add(_b)
    _POLAR.setdefault(_b, set()).add(_a)

# Common words per language (only words that are not also common English words): a text is in the
# language whose words it holds most, when it holds at least two.
_LANGUAGE_WORDS = {
    "fr": "le la les des est une du et pour pas dans qui que sur au avec ce cette quelle quel "
    "comment pourquoi où je tu nous vous mes mon ma ses leur très aussi être avoir",
    "de": "der die das und ist nicht ein eine mit für auf den dem wie was warum wo wer ich du "
    "wir ihr sie es sind bitte mein meine auch noch für über",
    "es": "el la los las es una un del y para por con qué cómo dónde por qué cuál yo tú mis "
    "sobre está son también muy pero",
    "it": "il lo la gli le è una un del della e per con che come dove perché qual sono anche "
    "molto ma questo questa",
    "pt": "o a os as é uma um do da e para com que como onde por quê qual são também muito mas "
    "isso esta este não",
    "nl": "de het een en is van voor met dat hoe waar waarom wat wie ik jij wij zijn ook niet",
    "en": "the a an and is are of for to with what how why where who which do does can i you "
    "my your it this that in on be have",
}
# Function words: a paraphrase may change them freely (the wording rule ignores them).
_STOPWORDS = set(
    _wordlist(
        "a an the and or but if of for to in on at by with from into onto about as is are was were be been "
        "being am do does did done doing have has had having can could would should will shall may might "
        "must i you he she it we they me him her us them my your his its our their mine yours this that "
        "these those there here so too very just really please kindly also then than some any each "
        "there's it's get got make tell give show let know want need like way thing things go going "
        "able possible okay ok exactly actually usually generally typically basically"
    )
)
# "what" and "which" open most questions of every kind ("what is X", "which city is X"): function
# words. The others ask for a kind of answer (a person, a time, a place, a reason, a manner).
_QUESTION_CLASS = {"who": "who", "whom": "who", "whose": "whose", "when": "when", "where": "where",
                   "why": "why", "how": "how"}  # fmt: skip
_STOPWORDS |= {"what", "which"}
# Words that mean the same in every context they share: one stands for its class.
_SYNONYMS = {
    w: group.split()[0]
    for group in (
        "largest biggest",
        "smallest tiniest",
        "large big",
        "small little",
        "way method approach",
        "author writer",
        "begin start",
        "buy purchase",
        "help assist",
        "cost price",
        "fix repair",
        "fast quick",
        "film movie",
        "use utilise utilize",
        "show display",
        "error mistake",
        "picture photo image",
        "child kid",
        "place location",
        "okay ok fine",
        "answer reply",
        "choose pick select",
        "correct right",
        "delete erase",
        "explain describe",
        "car automobile",
        "find locate",
        "get obtain receive",
        "house home",
        "job work",
        "rich wealthy",
        "sick ill",
        "talk speak",
        "story tale",
        "shop store",
        "hard difficult",
        "easy simple",
        "big huge",
    )
    for w in group.split()
}
_CONTRACTIONS = {"'s": " is", "'re": " are", "'m": " am", "'ve": " have", "'ll": " will", "'d": " would"}
_LANGUAGES = {
    lang: set(words.split()) - (set() if lang == "en" else _STOPWORDS | set(_LANGUAGE_WORDS["en"].split()))
    for lang, words in _LANGUAGE_WORDS.items()
}


@dataclass(frozen=True, slots=True)
class Meaning:
    """What of a conversation a paraphrase keeps and a different question changes."""

    numbers: tuple[str, ...]  # sorted, normalised
    negations: int
    dates: frozenset[str]
    names: frozenset[str]  # lower case
    words: frozenset[str]  # every word, lower case (a name of one must appear in the other)
    units: frozenset[str]
    polar: frozenset[str]
    language: str  # an ISO 639-1 code, a script name, or "" when too short to tell
    order: tuple[str, ...]  # units in the order they first appear
    route: tuple[str, ...]  # names after "from" and after "to"/"into", in order
    last: tuple[str, ...]  # the last turn's words, normalised (for the wording rule)

    def to_json(self) -> list[Any]:
        return [
            list(self.numbers),
            self.negations,
            sorted(self.dates),
            sorted(self.names),
            sorted(self.words),
            sorted(self.units),
            sorted(self.polar),
            self.language,
            list(self.order),
            list(self.route),
            list(self.last),
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> Meaning:
        numbers, negations, dates, names, words, units, polar, language, order, route, last = data
        return cls(
            tuple(map(str, numbers)),
            int(negations),
            frozenset(map(str, dates)),
            frozenset(map(str, names)),
            frozenset(map(str, words)),
            frozenset(map(str, units)),
            frozenset(map(str, polar)),
            str(language),
            tuple(map(str, order)),
            tuple(map(str, route)),
            tuple(map(str, last)),
        )


def _number(token: str) -> str:
    if "," in token and "." not in token and re.fullmatch(r"\d{1,3}(,\d{3})+", token):
        token = token.replace(",", "")
    token = token.replace(",", ".")
    if "." in token:
        token = token.rstrip("0").rstrip(".") or "0"
    return token.lstrip("0") or "0"


def _script(text: str) -> str:
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            script = name.split(" ")[0] if name else ""
            counts[script] = counts.get(script, 0) + 1
    if not counts:
        return ""
    script = max(counts, key=lambda s: counts[s])
    return "" if script == "LATIN" else script.lower()


def _language(words: Sequence[str], text: str) -> str:
    script = _script(text)
    if script:
        return script
    hits = {lang: sum(1 for w in words if w in vocab) for lang, vocab in _LANGUAGES.items()}
    best = max(hits, key=lambda lang: hits[lang])
    if hits[best] < 2:
        return ""
    if hits["en"] == hits[best]:
        return "en"
    return best


def _last_words(text: str) -> tuple[str, ...]:
    """The words of a turn as the wording rule compares them: lower case, contractions spelled out,
    plurals and possessives folded, question words by class."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short + " ", long + " ").replace(short + "?", long + "?")
    text = text.replace("n't", " not")
    out: list[str] = []
    for match in _TOKEN.finditer(text):
        word = match.group().replace("'", "")
        if word[0].isdigit() or word in _NUMBER_WORDS:
            out.append("#" + (_number(word) if word[0].isdigit() else _NUMBER_WORDS[word]))
            continue  # "#5": kept in place, compared by the numbers rule
        if word in _QUESTION_CLASS:
            out.append(_QUESTION_CLASS[word])
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(_SYNONYMS.get(word, word))
    return tuple(out)


def meaning(turns: list[str]) -> Meaning:
    """The answer-changing features of a conversation (its turns' texts, the last one last)."""
    text = unicodedata.normalize("NFKC", "\n".join(turns))
    numbers: list[str] = []
    negations = 0
    dates: set[str] = set()
    names: set[str] = set()
    units: set[str] = set()
    polar: set[str] = set()
    words: list[str] = []
    previous = ""
    order: list[str] = []
    route: list[str] = []
    direction = ""  # "from" or "to" while the next name is a source or a destination
    last_end = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        sentence_start = last_end == 0 or any(c in ".!?:;\n" for c in text[last_end : match.start()])
        last_end = match.end()
        if token[0].isdigit():
            ordinal = _ORDINAL.match(token)
            number = ordinal.group(1) + "th" if ordinal else _number(token)
            if number != "1":  # "a mile", "one mile" and "1 mile" ask the same
                numbers.append(number)
            previous = token
            continue
        lower = token.lower().replace("’", "'")
        base = lower[:-2] if lower.endswith("'s") else lower
        bare = base.replace("'", "")
        words.append(bare)
        if lower.endswith("n't") or bare in _NEGATIONS or (bare == "no" and previous.lower() != "yes"):
            negations += 1
        if bare in _NUMBER_WORDS and _NUMBER_WORDS[bare] not in ("1", "1st"):
            numbers.append(re.sub(r"(st|nd|rd)$", "th", _NUMBER_WORDS[bare]))
        elif bare == "first":
            numbers.append("1th")
        if bare in _DATES or token in _CASE_SENSITIVE_DATES:
            dates.add(bare)
        if bare in _PERIODS and previous.lower() in _RELATIVE:
            dates.add(f"{previous.lower()} {bare}")
        unit = _UNITS.get(bare) or _UNITS.get(token)
        if unit is not None:
            units.add(unit)
            if unit not in order:
                order.append(unit)
        if bare in _POLAR:
            polar.add(bare)
        is_name = (token[0].isupper() and not sentence_start and token != "I" and bare not in _DATES) or (
            any(c.isupper() for c in token[1:]) and token != "I"
        )
        if is_name:
            names.add(bare)
            if direction:
                route.append(f"{direction}:{bare}")
                direction = ""
        if bare == "from":
            direction = "from"
        elif bare in ("to", "into"):
            direction = "to"
        elif not is_name and bare not in _STOPWORDS:
            direction = ""
        previous = token
    return Meaning(
        tuple(sorted(numbers)),
        negations,
        frozenset(dates),
        frozenset(names),
        frozenset(words),
        frozenset(units),
        frozenset(polar),
        _language(_last_words(turns[-1]), turns[-1]) if turns else "",
        tuple(order),
        tuple(route),
        _last_words(turns[-1]) if turns else (),
    )


def _reworded(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether ``b`` is ``a`` with content words swapped, added or dropped while most of the sentence
    stays as it was: "Who wrote X?" / "Who published X?", "vitamins in spinach" / "in cooked
    spinach". A paraphrase either changes only function words or rebuilds the sentence."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks())
    if kept < 0.5 * max(len(a), len(b)):
        return False  # rebuilt: similarity and the other rules decide
    shared = set(a) & set(b)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        changed = [
            w for w in (*a[i1:i2], *b[j1:j2]) if w not in _STOPWORDS and w not in shared and w[0] != "#"
        ]
        if changed:
            return True
    return False


def conflict(a: Meaning, b: Meaning) -> str | None:
    """Why ``a``'s answer must not serve ``b`` (a word for the trace and the metrics), or None."""
    if a.numbers != b.numbers:
        return "number"
    if a.negations != b.negations:
        return "negation"
    if a.dates != b.dates:
        return "date"
    if a.units != b.units:
        return "unit"
    if any(n not in b.words for n in a.names) or any(n not in a.words for n in b.names):
        return "name"
    for word in a.polar - b.polar:
        if _POLAR[word] & (b.polar - a.polar):
            return "polarity"
    if a.language and b.language and a.language != b.language:
        return "language"
    if len(a.order) > 1 and len(b.order) > 1 and a.order != b.order:
        return "order"  # kilometres in a mile is not miles in a kilometre
    if a.route and b.route and a.route != b.route:
        return "order"  # from London to Paris is not from Paris to London
    if _reworded(a.last, b.last):
        return "wording"
    return None
