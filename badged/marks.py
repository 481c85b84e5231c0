"""The mark badged leaves on what it made: ``COMMENT ON`` text with the badges served and a digest. Pure.

Every function and trigger badged creates carries ``managed by badged: badges=a,b sha256=<16 hex>``;
``plan`` reads it back to tell badged's objects from anyone else's and a changed body from an
unchanged one without comparing the text PostgreSQL normalised.
"""

from __future__ import annotations

import hashlib

from psycopg import sql

#: A statement badged runs: always composed with psycopg.sql, never a string (nothing can be pasted into it).
Statement = sql.SQL | sql.Composed
#: Stamped into every object comment so people (and badged) can tell what made it.
COMMENT_MARK = "managed by badged"


def text(composable: sql.Composable) -> str:
    """SQL as a string, without a connection (identifiers and literals are quoted)."""
    return composable.as_string(None)


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def comment_for(badges: tuple[str, ...], digest: str) -> str:
    served = f"badges={','.join(badges)} " if badges else ""
    return f"{COMMENT_MARK}: {served}sha256={digest}"


def parse_comment(comment: str | None) -> tuple[tuple[str, ...], str] | None:
    """(badges, digest) from a comment badged wrote (also the one-badge form of earlier versions)."""
    if not comment or not comment.startswith(f"{COMMENT_MARK}: "):
        return None
    fields = dict(part.partition("=")[::2] for part in comment[len(COMMENT_MARK) + 2:].split(" "))
    codes = fields.get("badges", fields.get("badge", ""))
    return tuple(code for code in codes.split(",") if code), fields.get("sha256", "")
