"""Random writes over the differential schema: single- and multi-row inserts, upserts, updates, deletes.

A case's writes are transactions of one to three statements. A statement may fail (a duplicate key):
its transaction rolls back on both sides alike, which the comparison then also covers.
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.differential.schema import BY_NAME, Table


def _value(table: Table, column: str) -> st.SearchStrategy[str]:
    return st.sampled_from(table.values[column])


@st.composite
def insert(draw: st.DrawFn, table: Table) -> str:
    ids = draw(st.lists(_value(table, "id"), min_size=1, max_size=3, unique=True))
    rows = [[row_id, *(draw(_value(table, column)) for column in table.columns[1:])] for row_id in ids]
    values = ", ".join(f"({', '.join(row)})" for row in rows)
    statement = f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES {values}"
    if table.name == "entries":  # partitioned, no primary key: no ON CONFLICT
        return statement
    conflict = draw(st.sampled_from(("", "nothing", "update", "update")))
    if conflict == "nothing":
        return f"{statement} ON CONFLICT (id) DO NOTHING"
    if conflict == "update":
        columns = draw(st.lists(st.sampled_from(table.columns[1:]), min_size=1, max_size=2, unique=True))
        sets = ", ".join(f"{column} = EXCLUDED.{column}" for column in columns)
        return f"{statement} ON CONFLICT (id) DO UPDATE SET {sets}"
    return statement


@st.composite
def _assignment(draw: st.DrawFn, table: Table) -> str:
    column = draw(st.sampled_from(table.columns[1:]))
    numeric = {"posts": "views", "notes": "score", "entries": "amount"}[table.name]
    special = (f"{numeric} = {numeric} + 1", f"{column} = {column}")  # a change, and no change at all
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(special))
    return f"{column} = {draw(_value(table, column))}"


@st.composite
def _where(draw: st.DrawFn, table: Table) -> str:
    choice = draw(st.sampled_from(("id", "user", "user", "all")))
    if choice == "id":
        return f" WHERE id = {draw(_value(table, 'id'))}"
    if choice == "user":
        user = draw(st.sampled_from(table.user_fields))
        return f" WHERE {user} = {draw(_value(table, user).filter(lambda v: v != 'NULL'))}"
    return ""


@st.composite
def update(draw: st.DrawFn, table: Table) -> str:
    assignments = draw(st.lists(_assignment(table), min_size=1, max_size=2,
                                unique_by=lambda text: text.split(" = ")[0]))
    return f"UPDATE {table.name} SET {', '.join(assignments)}{draw(_where(table))}"


@st.composite
def delete(draw: st.DrawFn, table: Table) -> str:
    where = draw(_where(table).filter(bool))  # never the whole table: it would end most cases at once
    return f"DELETE FROM {table.name}{where}"


@st.composite
def statement(draw: st.DrawFn, tables: tuple[str, ...]) -> str:
    table = BY_NAME[draw(st.sampled_from(tables))]
    kind = draw(st.sampled_from((insert, insert, insert, update, update, delete)))
    return draw(kind(table))


def transactions(tables: tuple[str, ...], min_size: int, max_size: int) -> st.SearchStrategy[list[list[str]]]:
    """Transactions on *tables*, most of one statement, some of two or three."""
    one = st.lists(statement(tables), min_size=1, max_size=1)
    several = st.lists(statement(tables), min_size=2, max_size=3)
    return st.lists(st.one_of(one, one, one, several), min_size=min_size, max_size=max_size)
