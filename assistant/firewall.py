"""PHI firewall for assistant calls: identifiers become per-call placeholders before anything
leaves the service, and the serialized request is searched for known identifiers (fail closed).
Deterministic (../shared/notes/gemini.md section 3: no NER model is obtainable cleanly offline):
the room's people from the graph, plus patterns (assistant/patterns.py). Pure, no I/O. Rules:

1. People: display names, their parts and hyphenated sub-parts, common diminutives ("Bill"),
   "ae/oe/ue" umlauts ("Mueller"), distinctive email local parts; matched in folded text (NFKD,
   accents, typographic apostrophes/dashes and zero-width characters normalised, any case), so
   "MARIA", "maria's", "Kowalski's", "Zoe" are one person's [PERSON_n] (titles and "'s" stay
   out). A capitalised word one edit from a distinctive part of >= 6 letters ("Kowalsky"), or a
   part plus "s" ("Marias"), is that person too.
2. Parts that are words (COMMON_WORDS, EPONYMS: Will, Hope, Grace, May, Baker) count only as a
   name: after "@", a title or an initial ("dr hope", "W. Hope"); capitalised mid-sentence
   ("ask Grace"; a month name not after "in", "since"... nor by a number); sentence-initial
   before ",", ":", "'s" or a verb that makes it the subject ("Will said", "Grace may"; not
   "Hope you"); capitalised next to another name. Never an eponym before its noun ("Baker's
   cyst"), never lower case otherwise ("I will add", "grace period"). Full names made of such
   words need capitals ("Will Hope"). Parts of <= 2 letters ("Ed"): the same minus
   "capitalised mid-sentence". Particles ("van") never count alone.
3. Third parties are learnt for the rest of the call after a title ("Dr. Nowak"), a relation
   ("husband Peter"), "Patient:" or "patient Fatima Rahman", and from @handles. Call learn() /
   redact_all() first, or a name learnt late leaves earlier texts for leaks() to block.
4. Patterns, first wins: emails; record numbers after a keyword (MRN, MR#, NHS number, chart #,
   hospital no., ID...), SSNs; dates (ISO, d/m/y, m/d/y, "14 March 2026", "March 14th", "3rd
   of April", "Mar-2021", "Tuesday 14th", "14/3" if the day is > 12, "on 3/12" only after a date
   word; not "2/7", "3/52", "6/6", weekdays, a month or a year alone); addresses (number and
   street with "Flat 2," before and town and postcode after, named streets, "Town, ST 12345",
   UK postcodes, PO boxes); ages over 89 (the phrase); phones (phonenumbers US/GB at
   Leniency.POSSIBLE plus a digit-group shape, not doses, ranges, times, thousands or years);
   bare runs of 7-12 digits and letter+6-digit ids (MRN; 10-11 digits starting 0: UK phone).
5. Placeholders are numbered per type in order of first appearance and kept for the call (phones
   and record numbers by digits). restore() puts back display names, else the first spelling
   seen; placeholders never issued stay as they are.
6. leaks() searches the raw text and the JSON-decoded strings for names and distinctive parts,
   ambiguous parts only where rule 2 holds, graph emails, every redacted value (word bounds, any
   case or accents; phones and record numbers by digits) and contextual values ("on 3/12") in
   context. Redacted text passes by construction (same detectors; placeholders keep the context
   of what they replace) if author labels end with ":" ("[PERSON_2, doctor]: Hope you...").
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from assistant import patterns as pt
from assistant.patterns import Hit, fold, fold_map

FIREWALL_VERSION = "2026-12-07.1"
TYPES = ("PERSON", "EMAIL", "PHONE", "DATE", "MRN", "ADDRESS", "AGE")
PLACEHOLDER = re.compile(r"\[(PERSON|EMAIL|PHONE|DATE|MRN|ADDRESS|AGE)_\d+\]")
_OPENINGS = tuple(f"[{kind}_" for kind in TYPES)
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d \t().-]*\d")
# Between the words of one name: spaces, a hyphen or apostrophe; in an email local part: . _
_GAP = re.compile(r"[ \t]{1,3}|[ \t]?['-][ \t]?|[._]")
_ADJACENT = re.compile(r"[ \t]{1,2}|-")
_SAME_NAME_GAP = re.compile(r"[ \t]+")
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
_GENERIC_LOCAL = pt.words(
    "info admin office contact mail email hello team support noreply reception enquiries "
    "clinic ward doctor nurse secretary")


@dataclass(frozen=True, slots=True)
class Person:
    """Someone the service knows in the room (from the graph)."""

    user_id: str
    display_name: str
    email: str | None = None


def safe_prefix(text: str) -> int:
    """How much of streamed `text` can be shown without splitting a placeholder: a trailing
    "[", "[PER", "[PERSON_1" is held back until its "]" arrives (at most 15 characters)."""
    start = text.rfind("[")
    if start < 0 or "]" in text[start:]:
        return len(text)
    tail = text[start:]
    for opening in _OPENINGS:
        if opening.startswith(tail):
            return start
        number = tail[len(opening):]
        if tail.startswith(opening) and number.isdigit() and len(number) <= 6:
            return start
    return len(text)


@dataclass(frozen=True, slots=True)
class _Term:
    key: str  # the placeholder's key: "u:<user id>", "t:<learnt name>", "s:<shared word>"
    rule: int  # pt.ANY | WORD | SHORT | CAPS


def _gap_mark(gap: str) -> str:
    return "." if "." in gap else "_" if "_" in gap else " "


def _rule(word: str) -> int:
    return pt.SHORT if len(word) <= 2 else pt.WORD if word in pt.AMBIGUOUS else pt.ANY


class _Names:
    """The people of one call as terms: folded words and word sequences -> placeholder key."""

    def __init__(self, people: Iterable[Person]) -> None:
        self._terms: dict[str, _Term] = {}
        self._near: dict[str, list[tuple[str, str]]] = {}  # first letter -> (part, key)
        self._longest = 1
        for person in people:
            self._add_person("u:" + person.user_id, person.display_name, person.email)

    def _add_person(self, key: str, name: str, email: str | None) -> None:
        for spelling in {fold(name), fold(name.translate(_UMLAUTS))}:
            words = spelling.split()
            if len(words) > 1:
                self._add(" ".join(words), key)
            for word in words:
                self._add_part(word, key)
                for nickname in pt.NICKNAMES.get(word, ()):
                    self._add(nickname, key)
        local = fold(email).partition("@")[0] if email else ""
        plain = re.sub(r"[^a-z0-9]", "", local)
        if len(plain) >= 4 and plain not in _GENERIC_LOCAL | pt.AMBIGUOUS and not plain.isdigit():
            self._add(local, key, pt.ANY)

    def _add_part(self, word: str, key: str) -> None:
        if word in pt.PARTICLES:
            return
        self._add(word, key)
        parts = pt.TOKEN.findall(word)
        if len(parts) > 1:
            self._add("".join(parts), key)  # "AnneMarie", "OBrien"
            for part in parts if "-" in word else ():
                self._add_part(part, key)

    def _add(self, term: str, key: str, rule: int | None = None) -> None:
        spans = [(m.start(), m.end()) for m in pt.TOKEN.finditer(term)]
        if not spans:
            return
        words = [term[a:b] for a, b in spans]
        if rule is None:
            rules = [_rule(word) for word in words if word not in pt.PARTICLES]
            rule = rules[0] if len(words) == 1 else pt.ANY if pt.ANY in rules else pt.CAPS
        joined = words[0] + "".join(
            _gap_mark(term[b:c]) + term[c:d] for (_, b), (c, d) in pairwise(spans))
        known = self._terms.get(joined)
        if known is None:
            self._terms[joined] = _Term(key, rule)
        elif known.key != key and not known.key.startswith("s:"):
            self._terms[joined] = _Term("s:" + joined, max(rule, known.rule))  # two people
        self._longest = max(self._longest, len(words))
        if rule == pt.ANY and len(words) == 1 and len(joined) >= 6:
            self._near.setdefault(joined[0], []).append((joined, key))

    def learn(self, cased: str, taken: bytearray) -> None:
        """Third parties named by their context ("Dr. Nowak", "husband Peter", "@jsmith")."""
        for m in pt.THIRD_PARTY.finditer(cased):
            group = "h" if m["h"] else "f" if m["f"] else "n"
            if any(taken[m.start(group):m.end(group)]):
                continue
            words = m[group].split()
            while words and words[-1].lower() in pt.NOT_NAMES:
                words.pop()
            folded = [fold(word) for word in words]
            if not folded or folded[0] in pt.NOT_NAMES or any(
                    self._terms.get(" ".join(pt.TOKEN.findall(word))) for word in folded):
                continue  # not a name, or someone already known
            key = "t:" + " ".join(folded)
            if group == "h":
                self._add(folded[0], key, pt.ANY)
                continue
            if len(folded) > 1:
                self._add(" ".join(folded), key)
            for word in folded:
                self._add_part(word, key)

    def find(self, cased: str, lower: str, taken: bytearray, *,
             strong_only: bool = False) -> list[Hit]:
        """People named in folded text; strong_only: ambiguous words never count."""
        tokens = [(m.start(), m.end()) for m in pt.TOKEN.finditer(lower)]
        accepted: list[tuple[int, int, str]] = []
        pending: list[tuple[int, int, str]] = []
        i = 0
        while i < len(tokens):
            i += self._match(cased, lower, tokens, i, taken, strong_only, accepted, pending)
        while pending:  # capitalised words next to a name are names too ("Maria Will")
            adjacent = [p for p in pending if pt.next_to_placeholder(cased, p[0], p[1])
                        or any(_touches(cased, p, a) for a in accepted)]
            if not adjacent:
                break
            accepted += adjacent
            pending = [p for p in pending if p not in adjacent]
        return [Hit(s, e, "PERSON", key) for s, e, key in _merge(cased, sorted(accepted))]

    def _match(self, cased: str, lower: str, tokens: list[tuple[int, int]], i: int,
               taken: bytearray, strong_only: bool, accepted: list[tuple[int, int, str]],
               pending: list[tuple[int, int, str]]) -> int:
        """Match the longest term at token i; return how many tokens it consumed."""
        for n, joined in self._ngrams(lower, tokens, i):
            term = self._terms.get(joined)
            start, end = tokens[i][0], tokens[i + n - 1][1]
            if term is None or any(taken[start:end]):
                continue
            verdict = term.rule == pt.ANY or (
                False if strong_only else pt.name_like(cased, start, end, term.rule))
            if verdict is False and n > 1:
                continue  # "Grace may" is not the full name: try "Grace" alone
            if verdict is not False:
                (accepted if verdict else pending).append((start, end, term.key))
            return n
        key = None if strong_only or any(taken[slice(*tokens[i])]) else self._near_miss(
            cased[slice(*tokens[i])])
        if key is not None:
            accepted.append((*tokens[i], key))
        return 1

    def _ngrams(self, lower: str, tokens: list[tuple[int, int]], i: int) -> list[tuple[int, str]]:
        joined = lower[slice(*tokens[i])]
        grams = [(1, joined)]
        for j in range(i + 1, min(i + self._longest, len(tokens))):
            gap = lower[tokens[j - 1][1]:tokens[j][0]]
            if not _GAP.fullmatch(gap):
                break
            joined += _gap_mark(gap) + lower[slice(*tokens[j])]
            grams.append((j - i + 1, joined))
        return grams[::-1]

    def _near_miss(self, word: str) -> str | None:
        """A capitalised misspelling of a distinctive part ("Kowalsky", "Marias")."""
        low = word.lower()
        if not word[0].isupper() or not word.isalpha() or low in pt.AMBIGUOUS:
            return None
        term = self._terms.get(low[:-1]) if low.endswith("s") and len(low) > 4 else None
        if term is not None and term.rule == pt.ANY:
            return term.key  # a possessive without its apostrophe
        if len(word) < 6:
            return None
        return next((key for part, key in self._near.get(low[0], ())
                     if abs(len(part) - len(low)) <= 1 and pt.one_edit(low, part)), None)


def _touches(cased: str, a: tuple[int, int, str], b: tuple[int, int, str]) -> bool:
    gap = cased[b[1]:a[0]] if b[1] <= a[0] else cased[a[1]:b[0]] if a[1] <= b[0] else ""
    return bool(_ADJACENT.fullmatch(gap))


def _merge(cased: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """One placeholder for "Kowalski Maria" (two parts of one person, spaces between)."""
    merged: list[tuple[int, int, str]] = []
    for span in spans:
        last = merged[-1] if merged else None
        if (last and last[2] == span[2] and _SAME_NAME_GAP.fullmatch(cased, last[1], span[0])
                and cased[last[0]:last[1]].lower() != cased[span[0]:span[1]].lower()):
            merged[-1] = (last[0], span[1], span[2])
        else:
            merged.append(span)
    return merged


class Vault:
    """One per assistant call: placeholders stable within the call (every variant of a person
    maps to the same [PERSON_n]); restore() maps them back."""

    def __init__(self, people: Sequence[Person]) -> None:
        self._people = {person.user_id: person for person in people}
        self._names = _Names(people)
        self._issued: dict[tuple[str, str], str] = {}
        self._shown: dict[str, str] = {}
        self._numbers: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._keys: dict[str, set[str]] = {kind: set() for kind in TYPES}
        self._digit_keys: dict[str, str] = {}
        self._probes: dict[str, set[str]] = {kind: set() for kind in TYPES}
        self._probes["EMAIL"] = {fold(person.email) for person in people if person.email}
        self._probe_re: re.Pattern[str] | None = None

    # ---- placeholders
    def placeholder_for(self, user_id: str) -> str:
        """The author label; a user id outside `people` gets a placeholder restore() keeps."""
        person = self._people.get(user_id)
        return self._placeholder("PERSON", "u:" + user_id, person.display_name if person else None)

    def _placeholder(self, kind: str, key: str, shown: str | None) -> str:
        placeholder = self._issued.get((kind, key))
        if placeholder is None:
            self._numbers[kind] += 1
            placeholder = self._issued[(kind, key)] = f"[{kind}_{self._numbers[kind]}]"
            if shown is not None:
                self._shown[placeholder] = shown
        return placeholder

    @property
    def counts(self) -> dict[str, int]:
        """Redactions so far by type (non-zero only)."""
        return {kind: n for kind, n in self._counts.items() if n}

    @property
    def originals(self) -> dict[str, str]:
        """Placeholder -> what restore() puts back (a copy)."""
        return dict(self._shown)

    # ---- redaction
    def redact(self, text: str) -> str:
        return self.redact_with_spans(text)[0]

    def learn(self, texts: Iterable[str]) -> None:
        """Learn third-party names ("her husband Peter") from all of a call's texts before
        redacting any: otherwise "Peter" in a text redacted earlier stays, and leaks() blocks."""
        for text in texts:
            cased = fold_map(text)[0]
            self._names.learn(cased, _taken(len(cased), pt.find_patterns(cased)))

    def redact_all(self, texts: Iterable[str]) -> list[str]:
        """learn() from every text, then redact each."""
        texts = list(texts)
        self.learn(texts)
        return [self.redact(text) for text in texts]

    def redact_with_spans(self, text: str) -> tuple[str, list[tuple[int, int, str]]]:
        """The redacted text and the (start, end, type) of every redaction in `text`."""
        cased, where = fold_map(text)
        hits = pt.find_patterns(cased)
        taken = _taken(len(cased), hits)
        self._names.learn(cased, taken)
        hits += self._names.find(cased, pt.lower_same_length(cased), taken)
        out: list[str] = []
        spans: list[tuple[int, int, str]] = []
        last = 0
        for hit in sorted(hits, key=lambda h: h.start):
            start, end = where[hit.start], where[hit.end - 1] + 1
            while end < len(text) and pt.invisible(text[end]):  # "Zoe" + U+0308
                end += 1
            if start < last:  # two hits inside one character ("ß" folds to "ss")
                continue
            out += (text[last:start], self._record(hit, text[start:end]))
            spans.append((start, end, hit.kind))
            last = end
        out.append(text[last:])
        return "".join(out), spans

    def _record(self, hit: Hit, original: str) -> str:
        shown = original
        if hit.key.startswith("u:") and hit.key[2:] in self._people:
            shown = self._people[hit.key[2:]].display_name
        kind = hit.kind
        other = {"PHONE": "MRN", "MRN": "PHONE"}.get(kind)
        if other and (other, hit.key) in self._issued:
            kind = other  # one number seen as a phone and as a record number: one placeholder
        placeholder = self._placeholder(kind, hit.key, shown)
        self._counts[hit.kind] += 1
        self._keys[hit.kind].add(hit.key)
        if hit.kind in ("PHONE", "MRN") and len(pt.digits(original)) >= 5:
            self._digit_keys[pt.digits(original) if hit.kind == "MRN" else hit.key] = hit.kind
        elif hit.kind != "PERSON" and not hit.contextual:
            self._probes[hit.kind].add(fold(original))
            self._probe_re = None
        return placeholder

    def restore(self, text: str) -> str:
        """Placeholders back to names and values; placeholders never issued stay as they are."""
        return PLACEHOLDER.sub(lambda m: self._shown.get(m[0], m[0]), text)

    # ---- the fail-closed check
    def leaks(self, payload: str | bytes) -> list[str]:
        """The types (never the values) of known identifiers found in a serialized request."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        values = _json_strings(text)
        found: set[str] = set()
        self._scan(text, found, in_context=values is None)
        for value in values or ():
            self._scan(value, found, in_context=True)
        return sorted(found)

    def _scan(self, text: str, found: set[str], *, in_context: bool) -> None:
        """Raw JSON has escapes around words (\\n, \\u00eb): there, only identifiers that match
        in any context; decoded strings get every rule redact() applies."""
        cased = fold_map(text)[0]
        lower = pt.lower_same_length(cased)
        if self._names.find(cased, lower, bytearray(len(cased)), strong_only=not in_context):
            found.add("PERSON")
        probe = self._probe_regex()
        if probe is not None:
            found.update(m.lastgroup for m in probe.finditer(lower) if m.lastgroup)
        for run in _DIGIT_RUN.finditer(cased):
            number = pt.digits(run[0])
            found.update(kind for key, kind in self._digit_keys.items()
                         if number == key or (len(key) >= 7 and key in number))
        if in_context:
            found.update(h.kind for h in pt.find_patterns(cased) if h.key in self._keys[h.kind])

    def _probe_regex(self) -> re.Pattern[str] | None:
        if self._probe_re is None:
            groups = [f"(?P<{kind}>{'|'.join(map(_flexible, sorted(probes, key=len)[::-1]))})"
                      for kind, probes in self._probes.items() if probes]
            if groups:
                self._probe_re = re.compile(rf"(?<![^\W_])(?:{'|'.join(groups)})(?![^\W_])")
        return self._probe_re


def _flexible(probe: str) -> str:
    """A folded value as a pattern that tolerates other spacing and separators."""
    return r"[\s,.-]*".join(re.escape(part) for part in re.split(r"[\s,-]+", probe) if part)


def _taken(length: int, hits: Iterable[Hit]) -> bytearray:
    taken = bytearray(length)
    for hit in hits:
        taken[hit.start:hit.end] = b"\1" * (hit.end - hit.start)
    return taken


def _json_strings(text: str) -> list[str] | None:
    """Every string (keys included) in a JSON document, or None if `text` is not JSON."""
    try:
        stack: list[object] = [json.loads(text)]
    except ValueError:
        return None
    strings: list[str] = []
    while stack:
        item = stack.pop()
        strings += [item] if isinstance(item, str) else ()
        stack += [*item, *item.values()] if isinstance(item, dict) else ()
        stack += item if isinstance(item, list) else ()
    return strings
