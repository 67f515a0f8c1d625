"""The PHI firewall (assistant/firewall.py) on its synthetic corpus (tests/phi_corpus.py):
recall, negative controls, placeholders, restore, streaming, and the fail-closed leak check.
Pure: no service. Timing is reported by `make firewall-report`, never asserted."""

from __future__ import annotations

import json
import unicodedata

import pytest

from assistant.firewall import PLACEHOLDER, TYPES, Person, Vault, safe_prefix
from bench.firewall import evaluate, locate
from tests.phi_corpus import HELD_OUT, MAIN, ROSTER, Line

# Measured on MAIN with FIREWALL_VERSION 2026-12-07.1: 88/89 (the miss: "Ed" alone, a short
# name part, by design). A floor, so that a rule change that loses recall fails here.
MAIN_RECALL_FLOOR = 0.97
MAIN_PRECISION_FLOOR = 0.97
SETS = {"main": MAIN, "held-out": HELD_OUT}
AMBIGUOUS_PARTS = ("Will", "Hope", "Grace", "May", "Baker")


def _payload(text: str, *, ascii_only: bool = True) -> str:
    """Roughly what the SDK sends: the discussion inside a JSON request body."""
    return json.dumps({"contents": [{"parts": [{"text": text}], "role": "user"}]},
                      ensure_ascii=ascii_only)


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


def test_corpus_size_and_gold() -> None:
    assert len(MAIN) >= 60 and len(HELD_OUT) >= 20
    assert len({p.user_id for p in ROSTER}) == len(ROSTER) >= 6
    for line in MAIN + HELD_OUT:
        locate(line)  # every gold substring is where it says
    assert sum(not line.gold for line in MAIN) >= 10  # negative controls


@pytest.mark.parametrize("name", SETS)
def test_known_identifiers_are_always_caught(name: str) -> None:
    score = evaluate(SETS[name])
    assert score.known > 0
    assert score.known_caught == score.known, score.missed
    assert score.blocked == 0


def test_main_set_recall_and_precision_floors() -> None:
    score = evaluate(MAIN)
    assert score.caught.total() / score.gold.total() >= MAIN_RECALL_FLOOR, score.missed
    assert score.precise.total() / score.redactions.total() >= MAIN_PRECISION_FLOOR, \
        score.spurious


# The held-out set's measured false positive among its negative controls (rules not retuned).
HELD_OUT_WRONG = {"May 2 units of blood be given before theatre? Hb 71."}


@pytest.mark.parametrize("name", SETS)
def test_negative_controls_come_back_unchanged(name: str) -> None:
    vault = Vault(ROSTER)
    changed = {line.text for line in SETS[name] if not line.gold
               and vault.redact(line.text) != line.text}
    assert changed == (HELD_OUT_WRONG if name == "held-out" else set())


@pytest.mark.parametrize("name", SETS)
def test_redacted_lines_pass_the_leak_check(name: str) -> None:
    """The invariant: what redact() returns is never blocked, however it is serialized."""
    vault = Vault(ROSTER)
    for line in SETS[name]:
        redacted = vault.redact(line.text)
        assert vault.redact(redacted) == redacted  # idempotent
        for payload in (json.dumps(redacted), _payload(redacted),
                        _payload(redacted, ascii_only=False).encode(), redacted):
            assert vault.leaks(payload) == [], (line.text, redacted)


def test_a_whole_call_in_the_prompt_format_passes() -> None:
    vault = Vault(ROSTER)
    lines = [line.text for line in MAIN + HELD_OUT]
    redacted = vault.redact_all(lines)
    labels = [vault.placeholder_for(ROSTER[i % len(ROSTER)].user_id) for i in range(len(lines))]
    discussion = "\n".join(f"[m:{i}] [{label.strip('[]')}, doctor]: {text}"
                           for i, (label, text) in enumerate(zip(labels, redacted, strict=True)))
    assert vault.leaks(_payload(discussion)) == []
    assert vault.leaks(_payload("\n".join(lines))) != []  # and the raw one is blocked


def _variants(identifier: str) -> set[str]:
    return {identifier, identifier.upper(), identifier.lower(), _strip_accents(identifier)}


@pytest.mark.parametrize("person", ROSTER, ids=lambda p: p.user_id)
def test_participants_inserted_raw_are_found(person: Person) -> None:
    vault = Vault(ROSTER)
    clean = vault.redact(MAIN[5].text)
    parts = [p for p in person.display_name.replace("-", " ").split() if len(p) > 2]
    names = [person.display_name, *(p for p in parts if p not in AMBIGUOUS_PARTS)]
    # A name made only of English words needs a capital ("we will hope" is not Will Hope).
    words_only = all(p in AMBIGUOUS_PARTS or len(p) <= 2 for p in person.display_name.split())
    for name in names:
        for variant in _variants(name) - ({name.lower()} if words_only else set()):
            for payload in (_payload(f"{clean} {variant}"), _payload(f"{variant}'s bed"),
                            _payload(f"{clean}\n{variant}", ascii_only=False).encode()):
                assert "PERSON" in vault.leaks(payload), (variant, payload)
    for part in (p for p in parts if p in AMBIGUOUS_PARTS):  # only where used as a name
        for text in (f"{clean} Thanks {part}.", f"{part} said so.", f"ask Dr {part.lower()}"):
            assert "PERSON" in vault.leaks(_payload(text)), text
        assert vault.leaks(_payload(f"{clean} we {part.lower()} see")) == []
    assert person.email
    for variant in _variants(person.email):
        assert "EMAIL" in vault.leaks(_payload(f"write to {variant}"))


def test_redacted_values_inserted_raw_are_found() -> None:
    vault = Vault(ROSTER)
    redacted = [vault.redact(line.text) for line in MAIN]
    clean = _payload("\n".join(redacted))
    assert vault.leaks(clean) == []
    originals = {p: o for p, o in vault.originals.items() if not p.startswith("[PERSON")}
    assert {p.split("_")[0][1:] for p in originals} == set(TYPES) - {"PERSON"}
    for placeholder, original in originals.items():
        kind = placeholder.split("_")[0][1:]
        for variant in _variants(original):
            text = "\n".join([*redacted, f"seen on {variant} again"])
            assert vault.leaks(_payload(text)), (placeholder, variant)
        if kind in ("PHONE", "MRN"):  # by digits, whatever the separators (either type)
            digits = "".join(c for c in original if c.isdigit())
            for spelling in (digits, f"{digits[:3]}-{digits[3:6]} {digits[6:]}"):
                assert {"PHONE", "MRN"} & set(vault.leaks(_payload(f"{clean} {spelling}")))


def test_leak_check_cases() -> None:
    vault = Vault(ROSTER)
    vault.redact("Call 07700 900123 about MRN 4482913, seen 14 March 2026.")
    assert vault.leaks('{"text": "Zo\\u00eb Okafor"}') == ["PERSON"]  # JSON-escaped
    assert vault.leaks(json.dumps({"t": "ZOE OKAFOR"})) == ["PERSON"]  # case, accents
    assert vault.leaks(json.dumps({"t": "Zoe\u0308"})) == ["PERSON"]  # decomposed accent
    assert vault.leaks("note about Ma\u200bria") == ["PERSON"]  # zero-width space
    assert vault.leaks(b'{"t": "ring +44 7700 900-123"}') == ["PHONE"]  # other separators
    assert vault.leaks("mrn 448 2913") != []
    assert vault.leaks("since 14 march 2026") == ["DATE"]
    assert vault.leaks(json.dumps({"t": "MARIA.KOWALSKI@STMARYS.EXAMPLE"})) == ["EMAIL",
                                                                                "PERSON"]
    for fine in ("I will add the grace period; it may be fine.", "Baker's cyst",
                 "Hope you are well", "In May we audited", "call [PERSON_1] at [PHONE_1]"):
        assert vault.leaks(json.dumps({"t": fine})) == [], fine
    # Types only, never values.
    assert set(vault.leaks("Maria 4482913 maria.kowalski@stmarys.example")) <= set(TYPES)


def test_placeholders_are_stable_within_a_call() -> None:
    vault = Vault(ROSTER)
    assert vault.placeholder_for("u-grace") == "[PERSON_1]"  # labelled before it appears
    texts = ["Maria called", "Dr. Kowalski agreed", "MARIA’S plan", "kowalski's notes",
             "Maria Kowalski, MD", "Kowalski, Maria", "Marias notes"]
    placeholders = {PLACEHOLDER.search(vault.redact(t))[0] for t in texts}  # type: ignore[index]
    assert placeholders == {"[PERSON_2]"}
    assert vault.redact("Grace May and Zoë; ZOE, zoe") == (
        "[PERSON_1] and [PERSON_3]; [PERSON_3], [PERSON_3]")
    assert vault.redact("Hans Müller, Mueller, MULLER") == "[PERSON_4], [PERSON_4], [PERSON_4]"
    assert vault.redact("ring 07700 900123 or +44 7700 900123") == (
        "ring [PHONE_1] or [PHONE_1]")
    assert vault.redact("dates 2026-03-14 and 14/3, phone 555-0142") == (
        "dates [DATE_1] and [DATE_2], phone [PHONE_2]")
    assert vault.counts == {"PERSON": 15, "PHONE": 3, "DATE": 2}
    assert Vault(ROSTER).counts == {}


def test_restore_round_trip() -> None:
    for line in MAIN + HELD_OUT:
        vault = Vault(ROSTER)
        redacted, spans = vault.redact_with_spans(line.text)
        # People come back as their display name, a value seen twice as its first spelling.
        if all(kind != "PERSON" for _, _, kind in spans) and len(spans) == len(vault.originals):
            assert vault.restore(redacted) == line.text
    redacted = vault.redact("Kowalski’s plan for Grace: ring Dr. Nowak on 07700 900123")
    assert vault.restore(redacted) == (
        "Maria Kowalski’s plan for Grace May: ring Dr. Nowak on 07700 900123")


def test_invented_placeholders_are_left_alone() -> None:
    vault = Vault(ROSTER)
    label = vault.placeholder_for("u-maria")
    assert vault.restore(f"{label} and [PERSON_9] saw [EMAIL_3] on [DATE_1]") == (
        "Maria Kowalski and [PERSON_9] saw [EMAIL_3] on [DATE_1]")
    stranger = vault.placeholder_for("u-not-in-room")  # no name to restore: kept as is
    assert vault.restore(stranger) == stranger


def test_third_parties_learnt_late_block_unless_learnt_first() -> None:
    texts = ["Peter rang again this morning.", "Her husband Peter is the next of kin."]
    vault = Vault(ROSTER)
    first, second = (vault.redact(text) for text in texts)
    assert second == "Her husband [PERSON_1] is the next of kin."
    assert vault.leaks(_payload(first + "\n" + second)) == ["PERSON"]  # fail closed
    vault = Vault(ROSTER)
    redacted = vault.redact_all(texts)
    assert redacted[0] == "[PERSON_1] rang again this morning."
    assert vault.leaks(_payload("\n".join(redacted))) == []


@pytest.mark.parametrize(("text", "shown"), [
    ("", ""), ("plain text", "plain text"), ("see [", "see "), ("see [PER", "see "),
    ("see [PERSON_1", "see "), ("see [PERSON_12]", "see [PERSON_12]"),
    ("[PERSON_1] and [DA", "[PERSON_1] and "), ("see [1] and [m:12]", "see [1] and [m:12]"),
    ("a [note about", "a [note about"), ("x [PERSONA", "x [PERSONA"),
    ("x [ADDRESS_123456", "x "), ("x [ADDRESS_1234567", "x [ADDRESS_1234567"),
])
def test_safe_prefix(text: str, shown: str) -> None:
    assert text[:safe_prefix(text)] == shown


def test_streaming_never_shows_half_a_placeholder() -> None:
    vault = Vault(ROSTER)
    raw = f"Ask {vault.placeholder_for('u-will')} about [DATE_1]."
    for cut in range(len(raw) + 1):
        shown = vault.restore(raw[:cut][:safe_prefix(raw[:cut])])
        assert "[PER" not in shown and "[PERSON" not in shown
        assert "Will Hope".startswith(shown[4:13]) or "Will Hope" in shown


def _gold_types(lines: tuple[Line, ...]) -> set[str]:
    return {gold.kind for line in lines for gold in line.gold}


def test_corpus_covers_every_type_in_both_sets() -> None:
    assert _gold_types(MAIN) == set(TYPES)
    assert _gold_types(HELD_OUT) == set(TYPES)
