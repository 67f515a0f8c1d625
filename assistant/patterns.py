"""Detectors and word lists of the PHI firewall (its rules in prose: assistant/firewall.py).
They work on *folded* text (`fold_map`: accents dropped, typographic apostrophes and dashes
made ASCII, zero-width characters dropped, case kept), so "Zoë" and "Zoe" are one string."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from phonenumbers import Leniency, PhoneNumberMatcher


@dataclass(frozen=True, slots=True)
class Hit:
    """A span of folded text to redact; `key` identifies the value (two spellings of a phone
    number share a key, hence a placeholder)."""

    start: int
    end: int
    kind: str
    key: str
    # Found only thanks to its surroundings ("on 3/12"): never searched for as a bare string.
    contextual: bool = False


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Name parts that are also English (or clinical) words: matched only where used like a name.
COMMON_WORDS = words("""
will hope grace may june april august faith joy mark bill rose amber page frank long young
brown white black green gray grey rich dawn summer sunny art guy pat sue don ray rob bob jack
jay chase drew miles cliff dean earl glen hunter lane lee penny price reed stone wood banks
bishop cook carter mason hill ward hall king post best case cross close hart fox love moody
swift sharp strong little short major power chance rain storm well care bliss honey ivy holly
heather violet lily iris daisy hazel ruby pearl crystal olive sage river sky star fisher porter
parker marsh field fields moss park parks rivers shepherd cole gill gold silver bond cash wise
bright sweet noble hardy steel lamb wolf bird crane drake finch robin hawk bull buck house
street way hay stern church miller butler cooper fletcher warden booth hood head fry pope
bacon fish salmon pike bass rice ginger sandy rusty dusty chip duke grant hale pace pierce
rock ridge moor heath dale vale brook ford bridge port west north south east winter spring
autumn snow frost day knight night sterling nick temple chapel marshall baron prince queen
judge lord patience constance prudence charity mercy trinity harmony melody liberty
""")
# Eponyms that are also surnames: "Baker's cyst", "Bell's palsy", "Wells score" keep the word.
EPONYMS = words("""
baker bell graves parkinson crohn addison cushing hodgkin wilson turner paget murphy wells
smith jones barrett whipple foley swan apgar glasgow down still hunter becker evans lynch
gardner ramsay hunt holmes allen romberg doppler holter ringer hartmann fowler gram lewy pick
mallory weiss kaposi alzheimer huntington raynaud marfan osler horner charcot guillain barre
tourette asperger kawasaki lyme epstein barr conn fallot gilbert stevens johnson wernicke
korsakoff colles bennett barton salter harris gleason child pugh braden norton valsalva
""")
AMBIGUOUS = COMMON_WORDS | EPONYMS
_EPONYM_NOUNS = (
    r"disease|syndrome|sign|palsy|cyst|criteria|score|fracture|phenomenon|triad|"
    r"classification|scale|coma|manoeuvre|maneuver|reflex|nodes?|ulcer|lymphoma|sarcoma|"
    r"tumou?r|o?esophagus|solution|catheter|stage|contracture|diverticulum|encephalopathy|"
    r"thyroiditis|chorea|dementia|bod(?:y|ies)|stain|position|rule|formula")
EPONYM_USE = re.compile(rf"(?:'s|s'|')?\s+(?:{_EPONYM_NOUNS})\b", re.IGNORECASE)
PARTICLES = words("van von de der den da di du la le del della dos das bin ibn al el ter ten")
MONTH_NAMES = words("""
january february march april may june july august september october november december
""")
# After these a capitalised month-name ("in May") is the month, not Grace May.
MONTH_CONTEXT = words("""
in since until till by of from early late mid last next this during before after through
end start around
""")
# After a sentence-initial ambiguous word, these make it the subject: "Will said", "Grace may"
# (a month name only with a reporting verb: "May is a busy month").
REPORTING = words("""
said says asked asks wrote writes thinks thought agreed agrees mentioned noted suggested
reported confirmed replied told tells knows knew saw sees took takes gave gives wants needs
feels felt called calls
""")
AUXILIARIES = words("will would can could should might must may is was has had does did")
# Words that follow a title or a relation ("Dr", "husband") without being a name.
NOT_NAMES = MONTH_NAMES | words("""
the this that these those he she they it we i you his her their our my your and but or so
then on in at to for with from by of is was will has had can please thanks thank today
tomorrow yesterday no not yes ok also just re as if who what when where why how monday
tuesday wednesday thursday friday saturday sunday dr mr mrs ms mx miss prof professor doctor
nurse sister sir dame rev team on-call registrar consultant surgery practice
""")
# Common English diminutives: a participant "William" is also "Bill" (ambiguous: a word).
NICKNAMES: dict[str, tuple[str, ...]] = {
    full: tuple(short.split(",")) for full, short in (pair.split(":") for pair in words("""
william:will,bill,billy,liam elizabeth:liz,beth,lizzie,eliza katherine:kate,kathy,katie
catherine:kate,cathy,katie robert:rob,bob,bobby,robbie margaret:maggie,meg,peggy
alexander:alex,sandy alexandra:alex,sandra michael:mike,mick,mikey james:jim,jimmy,jamie
jonathan:jon,jonny thomas:tom,tommy richard:rick,ricky,rich joseph:joe,joey jose:pepe
christopher:chris daniel:dan,danny samuel:sam,sammy samantha:sam,sammie benjamin:ben,benny
nicholas:nick,nicky matthew:matt andrew:andy,drew edward:eddie,ted,ned patricia:pat,patty,trish
jennifer:jen,jenny rebecca:becky,becca victoria:vicky,tori susan:sue,susie deborah:debbie,deb
anthony:tony frederick:fred,freddie josephine:josie,jo maria:mia hans:hansi grace:gracie
"""))}

_TRANSLATE = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'", "\u2032": "'", "`": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
})


def _fold_char(ch: str) -> str:
    if ch in "ßẞ":
        return "ss" if ch == "ß" else "SS"
    if unicodedata.category(ch) == "Cf":  # zero-width spaces, joiners, BOM: invisible
        return ""
    decomposed = unicodedata.normalize("NFKD", ch.translate(_TRANSLATE))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def invisible(ch: str) -> bool:
    """A character folding drops (combining mark, zero-width): it belongs to its neighbour."""
    return not _fold_char(ch)


def fold_map(text: str) -> tuple[str, list[int]]:
    """Folded text (case kept) and, per folded character, its index in `text`."""
    if text.isascii() and "`" not in text:
        return text, list(range(len(text)))
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in _fold_char(ch):
            out.append(c)
            where.append(i)
    return "".join(out), where


def lower_same_length(text: str) -> str:
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def fold(text: str) -> str:
    """What comparisons use: accents dropped, case folded."""
    return lower_same_length(fold_map(text)[0])


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


# ---- emails
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][\w.%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")

# ---- record numbers: a keyword, then the value (only the value is redacted)
_MRN_WORD = (
    r"mrn|mr\s?#|mr\s?no\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|"
    r"nhs(?:\s+(?:number|no\.?|#))?|chi(?:\s+number)?|social\s+security(?:\s+number)?|ssn|"
    r"(?:hosp(?:ital)?|patient|pt|unit|case|chart|record|account|acct|study)\s*"
    r"(?:number|no\.?|num|#|id)|chart|(?:patient\s+)?id")
_MRN = re.compile(
    rf"(?i)\b(?:{_MRN_WORD})\s*[:#]?\s*(?:is\s+|was\s+|of\s+)?(?P<v>[A-Z]{{0,3}}-?"
    r"(?:\d{3}[ -]\d{3}[ -]\d{4}|\d{3}-\d{2}-\d{4}|\d{5,12}))(?![\w-])")
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
# Bare identifiers: long digit runs, or a few letters then 6+ digits ("A1234567").
_BARE_ID = re.compile(r"(?<![\w.,/+-])(?:\d{7,12}|[A-Z]{1,3}\d{6,10})(?![\w,/]|\.\d)")

# ---- dates
_MON = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
        r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_DATES = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"(?<![\d/.-])(?:19|20)\d\d([-/.])(?:0?[1-9]|1[0-2])\1(?:[12]\d|3[01]|0?[1-9])(?![\d/-]|\.\d)",
    r"(?<![\d/.-])(?P<a>\d{1,2})([/.-])(?P<b>\d{1,2})\2(?:\d{4}|\d{2})(?![\d/-]|\.\d)",
    rf"\b(?P<m>{_MON})\s+{_DAY}\b(?:,?\s+(?:19|20)\d\d\b)?",
    rf"\b{_DAY}(?:\s+of)?[\s-]+(?P<m>{_MON})(?![a-z])(?:,?[\s-]+(?:(?:19|20)\d\d|'\d\d)\b)?",
    rf"\b(?P<m>{_MON})(?:[\s-]+|\s*')(?:(?:19|20)\d\d|\d\d)\b",
))
_DAY_MONTH = re.compile(r"(?<![\d/.])(?P<a>\d{1,2})/(?P<b>\d{1,2})(?![\d/]|\.\d)")
_DATE_WORD = re.compile(
    r"(?i)\b(?:on|from|since|until|till|by|dated?|dob|d\.o\.b\.?|born|admitted|discharged|"
    r"seen|due|before|after)\s*:?\s*$")
_ORDINAL_DAY = re.compile(
    r"(?i)\b(?:(?:on|by|from|until|since)\s+the|(?:mon|tues?|wed(?:nes)?|thu(?:rs)?|fri|sat(?:ur)?|"
    r"sun)(?:day)?\.?(?:\s+the)?)\s+(?P<d>(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th))"
    r"(?=\s*(?:[.,;:!?)]|$|\s(?:at|and|or|when|but)\b))")

# ---- addresses
_SUFFIX = (r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Close|Court|Ct|Crescent|Cres|"
           r"Place|Pl|Way|Boulevard|Blvd|Parkway|Pkwy|Terrace|Square|Sq|Gardens|Grove|Mews|"
           r"Highway|Hwy|Circle)\b\.?")
_POSTCODE = r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[A-Z]{2}\b"
_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|"
           "NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY")
_UNIT = r"(?:(?:Flat|Apt\.?|Apartment|Unit|Suite|Ste\.?)\s+\w{1,5},?\s+)?"
_CAP = r"[A-Z][A-Za-z'-]*"
_ADDRESSES = tuple(re.compile(p) for p in (
    rf"{_UNIT}\b\d{{1,5}}[A-Za-z]?,?\s+(?:{_CAP}\s+){{1,3}}{_SUFFIX}"
    rf"(?:,?\s+(?:[A-Z][a-z]+(?:\s[A-Z][a-z]+)?,?\s+)?{_POSTCODE})?",
    r"\b(?:[A-Z][a-z'-]+\s+){1,2}(?:Street|Road|Avenue|Lane|Crescent|Terrace|Boulevard|"
    r"Parkway|Gardens|Mews)\b",
    rf"\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)?,\s*(?:{_STATES})\s+\d{{5}}(?:-\d{{4}})?\b",
    _POSTCODE,
    r"\b(?i:P\.?\s?O\.?\s+Box|zip(?:\s+code)?:?)\s+\d{1,6}(?:-\d{4})?\b",
))

# ---- ages over 89 (HIPAA Safe Harbor): the whole phrase becomes [AGE_n]
_OLD = r"(?P<n>9\d|1[01]\d)"
_AGES = tuple(re.compile(p, re.IGNORECASE) for p in (
    rf"\b{_OLD}(?:\s*-\s*|\s+)(?:years?|yrs?|y)(?:\s*-\s*|\s+)old\b",
    rf"\b(?:aged?|age:)\s*{_OLD}\b",
    rf"\b{_OLD}\s*(?:yo|y/o|y\.o\.|yrs?|years?)(?![\w/])(?!\s+(?:ago|later|before|after|of))",
    rf"\b{_OLD}\s?(?:M|F)\b",
    r"\bin (?:his|her|their) (?P<n>nineties|90s|hundreds)\b",
    rf"\b(?:turned|turns|turning)\s+{_OLD}\b",
    rf"\b{_OLD}(?:st|nd|rd|th)\s+birthday\b",
    r"\b(?P<n>ninety|(?:a|one)[\s-]hundred)(?:[\s-](?:and[\s-])?(?:one|two|three|four|five|six|"
    r"seven|eight|nine))?[\s-]+years?[\s-]+old\b",
))

# ---- phones: phonenumbers (US, GB) plus a shape for separated digit groups
_PHONE_SHAPE = re.compile(
    r"(?<![\w./-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){1,4}"
    r"(?![\w/]|\.\d)")
_NOT_PHONE = (
    re.compile(r"\d{1,3}(?:[ ,]\d{3})+"),  # thousands: "1 500 000"
    re.compile(r"(?:19|20)\d\d-(?:19|20)\d\d"),  # years: "2019-2021"
    re.compile(r"(?:[01]\d|2[0-3])[0-5]\d-(?:[01]\d|2[0-3])[0-5]\d"),  # times: "0800-1600"
    re.compile(r"[1-9]\d*0-[1-9]\d*0"),  # round ranges: "250-1000"
)
_ADDRESS_GAP = re.compile(r",?[ \t]*")
_UNIT_AFTER = re.compile(r"\s*(?:mg|mcg|g|kg|ml|l|units?|iu|mmol|mmhg|%|cells|copies)\b", re.I)


def _date_valid(a: int, b: int) -> bool:
    return 1 <= a <= 31 and 1 <= b <= 31 and (a <= 12 or b <= 12)


def _dates(text: str) -> Iterator[Hit]:
    for pattern in _DATES:
        for m in pattern.finditer(text):
            if "a" in m.groupdict() and not _date_valid(int(m["a"]), int(m["b"])):
                continue
            month = m.groupdict().get("m") or ""
            if month.rstrip(".").lower() in ("may", "mar", "march") and month.islower():
                continue  # "you may 2..." and "march" the verb
            yield Hit(m.start(), m.end(), "DATE", _norm(m[0]))
    for m in _DAY_MONTH.finditer(text):
        day, month = int(m["a"]), int(m["b"])
        # "14/3" is a date; "2/7", "3/12", "6/6" are durations or fractions unless "on 3/12".
        if 13 <= day <= 31 and 1 <= month <= 12 and month not in (7, 12):
            yield Hit(m.start(), m.end(), "DATE", _norm(m[0]))
        elif _date_valid(day, month) and month <= 12 and _DATE_WORD.search(text, 0, m.start()):
            yield Hit(m.start(), m.end(), "DATE", _norm(m[0]), contextual=True)
    for m in _ORDINAL_DAY.finditer(text):
        yield Hit(m.start("d"), m.end("d"), "DATE", _norm(m["d"]), contextual=True)


def _phones(text: str) -> Iterator[Hit]:
    spans = {(m.start(), m.end()) for m in _PHONE_SHAPE.finditer(text)}
    for region in ("US", "GB"):
        spans |= {(m.start, m.end) for m in PhoneNumberMatcher(text, region, Leniency.POSSIBLE)}
    for start, end in sorted(spans):
        raw = text[start:end]
        if len(digits(raw)) < 7 or raw.isdigit() or "/" in raw:
            continue  # too short for a phone; bare digit runs are _BARE_ID's
        if any(p.fullmatch(raw) for p in _NOT_PHONE) or _UNIT_AFTER.match(text, end):
            continue
        yield Hit(start, end, "PHONE", digits(raw)[-10:])


def _bare_ids(text: str) -> Iterator[Hit]:
    for m in _BARE_ID.finditer(text):
        value = m[0]
        if value[0] == "0" and len(value) in (10, 11):  # UK numbers start with a 0
            yield Hit(m.start(), m.end(), "PHONE", value[-10:])
        else:
            yield Hit(m.start(), m.end(), "MRN", value.upper())


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w/.'-]+", " ", text.lower()).split())


def _simple(patterns: tuple[re.Pattern[str], ...], kind: str, text: str,
            group: str | None = None) -> Iterator[Hit]:
    for pattern in patterns:
        for m in pattern.finditer(text):
            key = m[group] if group and group in m.groupdict() else _norm(m[0])
            yield Hit(m.start(), m.end(), kind, key.lower())


def _mrns(text: str) -> Iterator[Hit]:
    for m in _MRN.finditer(text):
        yield Hit(m.start("v"), m.end("v"), "MRN", re.sub(r"[^0-9A-Z]", "", m["v"].upper()))
    for m in _SSN.finditer(text):
        yield Hit(m.start(), m.end(), "MRN", digits(m[0]))


def find_patterns(text: str) -> list[Hit]:
    """Every pattern hit in folded `text`, without overlaps: earlier detectors win (an email
    before the names in it, a record number before the phone shape of its digits)."""
    taken = bytearray(len(text))
    hits: list[Hit] = []
    detectors: tuple[Iterator[Hit], ...] = (
        _simple((_EMAIL,), "EMAIL", text), _mrns(text), _dates(text),
        _simple(_ADDRESSES, "ADDRESS", text), _simple(_AGES, "AGE", text, "n"),
        _phones(text), _bare_ids(text))
    for found in detectors:
        for hit in sorted(found, key=lambda h: (h.start, -h.end)):
            if not any(taken[hit.start:hit.end]):
                taken[hit.start:hit.end] = b"\1" * (hit.end - hit.start)
                hits.append(hit)
    return _join_addresses(text, sorted(hits, key=lambda h: h.start))


def _join_addresses(text: str, hits: list[Hit]) -> list[Hit]:
    """"350 Fifth Avenue, New York, NY 10118": one address, one placeholder."""
    joined: list[Hit] = []
    for hit in hits:
        last = joined[-1] if joined else None
        if (last and last.kind == hit.kind == "ADDRESS"
                and _ADDRESS_GAP.fullmatch(text, last.end, hit.start)):
            joined[-1] = Hit(last.start, hit.end, "ADDRESS", _norm(text[last.start:hit.end]))
        else:
            joined.append(hit)
    return joined


# ---- names: how a participant's ambiguous name part is used (assistant/firewall.py, rule 2)
ANY, WORD, SHORT, CAPS = range(4)  # term rules: anywhere; word-like; <= 2 letters; all-words
TOKEN = re.compile(r"[^\W_]+")
_TITLE_ABBREV = re.compile(r"(?i)(?<![^\W_])(?:dr|mr|mrs|ms|mx|prof)\.?[ \t]+$")
_TITLE_WORD = re.compile(
    r"(?<![^\W_])(?:Doctor|Professor|Nurse|Sister|Sir|Dame|Rev|Reverend|Matron|Miss)\.?[ \t]+$")
_INITIAL_BEFORE = re.compile(r"(?<![^\W_])(?:[A-Z]\.|[B-HJ-Z])[ \t]+$")  # not "I", "A"
_OPEN = " \t\"'(*-\u2022\u201c[{<"
_VOCATIVE = re.compile(r",|:|[ \t]+-[ \t]")
_NEXT_WORDS = re.compile(r"[ \t]+([A-Za-z']+)(?:[ \t]+([A-Za-z]+))?")
_PAST = re.compile(r"[a-z]{2,}(?<!e)ed")
_PLACEHOLDER_BEFORE = re.compile(r"\[PERSON_\d+\][ \t]$")
_PLACEHOLDER_AFTER = re.compile(r"[ \t]\[PERSON_\d+\]")
_NAME_WORD = r"[A-Z][a-z]*(?:-[A-Z]?[a-z]+|'[A-Z][a-z]+)*"  # Anne-Marie, O'Brien; not 's
# Third parties named by their context: a title, a relation, a form field, an @handle.
THIRD_PARTY = re.compile(
    r"(?:(?<![^\W_])(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Professor|Doctor|Sir|Dame|Rev)\.?"
    r"|(?i:\b(?:husband|wife|son|daughter|mother|father|mum|mom|dad|brother|sister|partner|"
    r"fianc[eé]e?|grandson|granddaughter|grandmother|grandfather|grandma|grandpa|aunt|uncle|"
    r"niece|nephew|neighbou?r|friend|carer|caregiver|boyfriend|girlfriend|cousin|GP))"
    r"|(?i:\b(?:patient|pt|patient\s+name|name)[ \t]*:))"
    rf"[ \t]+(?P<n>{_NAME_WORD}(?:[ \t]+{_NAME_WORD})?)"
    rf"|\b(?:patient|pt)[ \t]+(?P<f>{_NAME_WORD}[ \t]+{_NAME_WORD})\b"
    r"|(?<![\w.])@(?P<h>[A-Za-z][\w.-]*[A-Za-z0-9])")


def _sentence_initial(cased: str, start: int) -> bool:
    i = start
    while i > 0 and cased[i - 1] in _OPEN:
        i -= 1
    return i == 0 or cased[i - 1] in ".!?:;\n\r]>"


def _subject(cased: str, end: int, month: bool) -> bool:
    """After a sentence-initial word: does what follows make it the sentence's subject?"""
    rest = cased[end:end + 40]
    if rest[:1] == "'":
        return True  # "Grace's", "Will'll"
    if _VOCATIVE.match(rest):
        return not month  # "Will, can you...", "Grace: ...", but "May, June and July"
    m = _NEXT_WORDS.match(rest)
    if not m:
        return False
    after = m[1].lower()
    if after in REPORTING or _PAST.fullmatch(after) or (after in AUXILIARIES and not month):
        return True
    return (after in ("and", "or") and bool(m[2]) and m[2][0].isupper()
            and not (month and m[2].lower() in MONTH_NAMES))


def _month_use(cased: str, start: int, end: int) -> bool:
    before = cased[max(0, start - 20):start].split()
    return ((bool(before) and before[-1].lower() in MONTH_CONTEXT)
            or bool(re.match(r"[ \t]*,?[ \t]*\d", cased[end:end + 4]))
            or bool(re.search(r"\d[ \t]*$", cased[max(0, start - 4):start])))


def name_like(cased: str, start: int, end: int, rule: int) -> bool | None:
    """Is this ambiguous term used as a name here? None: only if next to another name."""
    word = cased[start:end]
    capital = word[:1].isupper()
    if rule == CAPS:
        return all(part[:1].isupper() for part in TOKEN.findall(word))
    if start and cased[start - 1] == "@":
        return True
    if word.lower() in EPONYMS and EPONYM_USE.match(cased, end):
        return False
    before = cased[max(0, start - 16):start]
    if _TITLE_ABBREV.search(before) or (capital and _TITLE_WORD.search(before)):
        return True
    if capital and _INITIAL_BEFORE.search(before):
        return True  # "W. Hope", "G May"
    if not capital:
        return False
    month = word.lower() in MONTH_NAMES
    if word.isupper() and len(word) > 1:
        return None  # shouting: case tells nothing
    if _sentence_initial(cased, start):
        return True if _subject(cased, end, month) else None
    if rule == SHORT:
        return None
    return not (month and _month_use(cased, start, end))


def next_to_placeholder(cased: str, start: int, end: int) -> bool:
    return bool(_PLACEHOLDER_BEFORE.search(cased, max(0, start - 16), start)
                or _PLACEHOLDER_AFTER.match(cased, end))


def one_edit(a: str, b: str) -> bool:
    """Optimal-string-alignment distance <= 1 (one substitution, insertion, deletion or swap)."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) <= 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    if abs(len(a) - len(b)) != 1:
        return False
    short, long = sorted((a, b), key=len)
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    return short[i:] == long[i + 1:]
