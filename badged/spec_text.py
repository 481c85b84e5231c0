"""How badge.json's text is read for what the eye misses, and quoted in messages. Pure.

Names must be what they look like: no invisible or control characters (PostgreSQL reads a zero-width space
after ``true`` as part of a column name), no letters of two alphabets that look alike (a Cyrillic e in
``dummy_sketch``). Values are quoted cut to a sentence's length: a 1 MB value does not make a message.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pglast.parser import ParseError, scan

#: how much of a value a message quotes: a 1 MB value does not make a sentence
_SHOWN = 60
#: the longest condition error shown whole; the parser quotes tokens, and a token can be a 10,000-character string
_LONGEST_MESSAGE = 400
# Unicode categories no name should contain: control, format (zero-width, bidi), line/paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Alphabets sharing letters that look the same (a, e, o, p): one name never mixes them.
_LOOKALIKE_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def shown(value: Any) -> str:
    """*value* as a message quotes it: its repr, cut in the middle when long."""
    return short(repr(value))


def short(text: str) -> str:
    """*text* cut in the middle when long: a code, key or value of a megabyte does not make a sentence."""
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN // 2]}…{text[-_SHOWN // 2:]}"


def one_line(message: str) -> str:
    """*message* as one line of sensible length: the parser quotes the condition's tokens, line breaks and all."""
    escaped = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
    return escaped if len(escaped) <= _LONGEST_MESSAGE else (
        f"{escaped[:_LONGEST_MESSAGE // 2]}…{escaped[-_LONGEST_MESSAGE // 2:]}")


def invisible_in_names(condition: str) -> str | None:
    """Why a name in *condition* is not what it looks like, or None.

    PostgreSQL reads every non-ASCII character as part of an unquoted name, so ``true``
    followed by a zero-width space is a column, misspelt in a way nobody can see.
    """
    try:
        tokens = scan(condition)
    except ParseError:
        return None  # parse_condition reports it
    for token in tokens:
        written = condition[token.start:token.end + 1]
        if token.name != "IDENT" or written.startswith('"'):
            continue
        odd = next((ch for ch in written if invisible(ch)), None)
        if odd is not None:
            return (f"contains the invisible or control character {describe(odd)} in the name {shown(written)}; "
                    "PostgreSQL would read it as part of that name")
    return None


def mixed_scripts(text: str) -> str | None:
    """Why a name in *text* is probably misspelt with a lookalike letter (a Cyrillic e in dummy_sketch), or None."""
    for name in identifiers(text):
        first: dict[str, str] = {}
        for ch in name:
            script = unicodedata.name(ch, "").split(" ")[0] if ch.isalpha() else ""
            if script in _LOOKALIKE_SCRIPTS:
                first.setdefault(script, ch)
        if len(first) > 1:
            odd = next(ch for script, ch in first.items() if script != "LATIN")
            return (f"mixes {' and '.join(s.title() for s in first)} letters in {shown(name)}, which look alike "
                    f"({describe(odd)}); retype the name in one alphabet")
    return None


def identifiers(text: str) -> list[str]:
    """The identifiers in *text* as PostgreSQL reads them (quotes removed; case aside), or none if it cannot scan."""
    try:
        tokens = scan(text)
    except ParseError:
        return []  # the parse reports it
    written = [text[token.start:token.end + 1] for token in tokens if token.name == "IDENT"]
    return [name[1:-1].replace('""', '"') if name.startswith('"') else name for name in written]


def invisible(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category in _INVISIBLE or (category == "Zs" and ch != " ")


def describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")
