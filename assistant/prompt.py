"""What the model is sent: the system instruction, the room's recent discussion as turns, and
the question, all through the call's firewall vault; and what is read back (citations).

A discussion line is `[m:<id>] [<placeholder>, <role>]: <redacted text>`; the assistant's
earlier answers are model turns. The oldest lines go first when the estimate passes the input
cap (4 characters per token, the usual figure for English; the model's own count arrives in
its usage metadata, which the daily budget is reconciled with)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.backend import AIRequest, Turn
from assistant.firewall import Vault

SYSTEM_INSTRUCTION = """\
You are the assistant of a medical collaboration room where clinicians, teachers and students \
discuss cases and teach. You support clinical discussion and teaching.
- You do not diagnose and you are not a substitute for clinical judgement: your answers may be \
wrong, and clinicians must verify them before acting on them.
- If the discussion describes an emergency, say plainly that it must be escalated now through \
the local emergency pathway, before anything else.
- Placeholders such as [PERSON_1], [EMAIL_1], [PHONE_1], [DATE_1], [MRN_1] or [ADDRESS_1] \
stand for details withheld from you. They are opaque: never guess who or what they are, and \
keep them exactly as written when you refer to them.
- Each discussion line starts with its message id, like [m:abc]. Cite the message behind every \
claim you take from the discussion as [m:<id>], using only ids you were given.
- If the discussion does not contain the answer, say so, and mark general medical knowledge \
as such.
- Be concise."""

CHARS_PER_TOKEN = 4
CITATION = re.compile(r"\[m:([A-Za-z0-9_-]{1,128})\]")


@dataclass(frozen=True, slots=True)
class Item:
    """A message of the room or an earlier answer, oldest first."""

    id: str
    author_id: str
    author_role: str
    text: str
    answer: bool = False  # the assistant's: a model turn


@dataclass(frozen=True, slots=True)
class Built:
    request: AIRequest
    sent_ids: tuple[str, ...]  # messages in the request, oldest first
    dropped: int  # items left out by the input cap


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def build(vault: Vault, items: Sequence[Item], *, asker_id: str, asker_role: str,
          prompt: str, model: str, max_input_tokens: int, max_output_tokens: int) -> Built:
    """The request, newest items kept first within `max_input_tokens`."""
    # Third parties named anywhere ("her husband Peter") are learnt before any text is
    # redacted: the newest lines go first, and must not keep a name an older line teaches.
    vault.learn([prompt, *(item.text for item in items)])
    question = (f"Question from [{_label(vault, asker_id)}, {asker_role}]:\n"
                f"{redact(vault, prompt)}")
    budget = max_input_tokens - estimate_tokens(SYSTEM_INSTRUCTION) - estimate_tokens(question)
    kept: list[tuple[Item, str]] = []
    for item in reversed(items):
        line = (redact(vault, item.text) if item.answer else
                f"[m:{item.id}] [{_label(vault, item.author_id)}, {item.author_role}]: "
                f"{redact(vault, item.text)}")
        cost = estimate_tokens(line)
        if cost > budget:
            break
        budget -= cost
        kept.append((item, line))
    kept.reverse()
    turns = _turns(kept, question)
    request = AIRequest(model=model, system=SYSTEM_INSTRUCTION, turns=turns,
                        max_output_tokens=max_output_tokens)
    sent = tuple(item.id for item, _ in kept if not item.answer)
    return Built(request, sent, len(items) - len(kept))


def redact(vault: Vault, text: str) -> str:
    """The text through the vault, its citation tags kept whole: an id is not an identifier
    (its hex digits could look like a number), and a cited id must stay as it was sent."""
    parts: list[str] = []
    last = 0
    for match in CITATION.finditer(text):
        parts += (vault.redact(text[last:match.start()]), match.group(0))
        last = match.end()
    parts.append(vault.redact(text[last:]))
    return "".join(parts)


def _label(vault: Vault, user_id: str) -> str:
    return vault.placeholder_for(user_id).strip("[]")


def _turns(kept: list[tuple[Item, str]], question: str) -> tuple[Turn, ...]:
    """Consecutive discussion lines make one user turn; an answer is a model turn. The
    question closes the last user turn (the model answers a user turn)."""
    turns: list[Turn] = []
    lines: list[str] = []
    for item, line in kept:
        if item.answer:
            if lines or not turns:  # contents start with a user turn
                turns.append(Turn("user", _discussion(lines)))
                lines = []
            turns.append(Turn("model", line))
        else:
            lines.append(line)
    body = f"{_discussion(lines)}\n\n{question}" if lines else question
    turns.append(Turn("user", body))
    return tuple(turns)


def _discussion(lines: list[str]) -> str:
    if not lines:
        return "(No discussion before this.)"
    return "Discussion so far:\n" + "\n".join(lines)


def citations(text: str, sent_ids: Sequence[str]) -> tuple[str, ...]:
    """The message ids the answer cites, in order of first citation, among those sent (an
    invented id is dropped)."""
    allowed = set(sent_ids)
    found: dict[str, None] = {}
    for match in CITATION.finditer(text):
        if match.group(1) in allowed:
            found.setdefault(match.group(1))
    return tuple(found)
