"""The tables the differential test writes to, and the small pools of values its writes draw from.

Three tables with four user key types: ``posts`` (integer users, or bigint ``editor``: badges of one table
with different user fields), ``notes`` (text users) and ``entries`` (uuid users, partitioned by ``kind`` so
that an update of ``kind`` moves rows between partitions). ``meta json`` and ``spot point`` have no ``=``
operator. Pools are small so that writes collide: the same ids, users and thresholds come back.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_SQL = """
CREATE TABLE posts (id integer PRIMARY KEY, user_id integer, views integer, kind text, meta json, editor bigint);
CREATE TABLE notes (id integer PRIMARY KEY, author text, score numeric, tag text, ref integer);
CREATE TABLE entries (id integer NOT NULL, owner uuid, kind text NOT NULL, amount integer, spot point)
    PARTITION BY LIST (kind);
CREATE TABLE entries_a PARTITION OF entries FOR VALUES IN ('a');
CREATE TABLE entries_b PARTITION OF entries FOR VALUES IN ('b');
CREATE TABLE entries_other PARTITION OF entries DEFAULT;
-- a user-defined aggregate: only pg_proc knows it is one
CREATE AGGREGATE total(integer) (sfunc = int4pl, stype = integer, initcond = '0');
"""

TABLES = ("posts", "notes", "entries")


@dataclass(frozen=True)
class Table:
    """A table of the schema: its user columns and the pools each column's values come from."""

    name: str
    #: columns badges may name as ``user_field`` (the first is the usual one)
    user_fields: tuple[str, ...]
    #: column -> SQL literals it may be set to (NULL among them where the column is nullable)
    values: dict[str, tuple[str, ...]]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.values)


IDS = tuple(str(i) for i in range(1, 7))
UUIDS = ("'00000000-0000-0000-0000-00000000000a'::uuid", "'00000000-0000-0000-0000-00000000000b'::uuid")

POSTS = Table("posts", ("user_id", "editor"), {
    "id": IDS,
    "user_id": ("1", "2", "3", "NULL"),
    "views": ("NULL", "0", "1", "5", "10", "50", "200"),
    "kind": ("NULL", "'x'", "'y'", "'z'"),
    "meta": ("NULL", "'{\"k\": \"v\"}'", "'{\"k\": \"w\"}'", "'{}'"),
    "editor": ("1", "2", "NULL"),
})
NOTES = Table("notes", ("author",), {
    "id": IDS,
    "author": ("'1'", "'2'", "'u'", "NULL"),
    "score": ("NULL", "0", "1.5", "10", "10.0"),
    "tag": ("NULL", "'x'", "'y'"),
    "ref": ("NULL", "1", "2", "3"),
})
ENTRIES = Table("entries", ("owner",), {
    "id": IDS,
    "owner": (*UUIDS, "NULL"),
    "kind": ("'a'", "'b'", "'c'"),
    "amount": ("NULL", "0", "1", "5", "20"),
    "spot": ("NULL", "'(1,2)'", "'(3,4)'"),
})
BY_NAME = {table.name: table for table in (POSTS, NOTES, ENTRIES)}
