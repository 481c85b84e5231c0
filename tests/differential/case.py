"""One generated case: a badge set and the transactions written under it, printable to reproduce by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.differential.conditions import Generated, badge_sets
from tests.differential.schema import SCHEMA_SQL, TABLES
from tests.differential.writes import transactions


@dataclass(frozen=True)
class Case:
    badges: tuple[tuple[str, Generated], ...]
    transactions: tuple[tuple[str, ...], ...]

    @classmethod
    def of(cls, badges: list[Generated], transactions: list[list[str]]) -> Case:
        return cls(tuple((f"b{i}", badge) for i, badge in enumerate(badges)),
                   tuple(tuple(statements) for statements in transactions))

    def badge_json(self) -> list[dict[str, Any]]:
        return [
            {"name": code, "code": code, "condition": badge.written, "trigger_condition": badge.event,
             "trigger_table": badge.table, "user_field": badge.user_field}
            for code, badge in self.badges
        ]

    @property
    def write_count(self) -> int:
        return sum(len(statements) for statements in self.transactions)

    def script(self, upto: int | None = None) -> str:
        """The schema and the transactions (the first *upto*), as SQL to paste into psql."""
        lines = [SCHEMA_SQL.strip(), "-- badged reconcile --once with the badge.json above, then:"]
        for statements in self.transactions[:upto]:
            if len(statements) == 1:
                lines.append(f"{statements[0]};")
            else:
                lines.append("BEGIN; " + " ".join(f"{s};" for s in statements) + " COMMIT;")
        return "\n".join(lines)

    def report(self, upto: int, difference: str) -> str:
        where = "before any write" if upto == 0 else f"after transaction {upto}"
        return (f"badged and the oracle disagree {where}: {difference}\n"
                f"--- badge.json\n{json.dumps(self.badge_json(), indent=1)}\n"
                f"--- SQL\n{self.script(upto)}\n"
                f"--- oracle conditions\n"
                + "\n".join(f"{code}: {badge.oracle} (changed columns: {badge.changed_columns})"
                            for code, badge in self.badges))


@st.composite
def cases(draw: st.DrawFn, min_writes: int, max_writes: int) -> Case:
    """A case on one or two tables (sometimes all three), so that its writes meet its badges."""
    tables = tuple(draw(st.lists(st.sampled_from(TABLES), min_size=1, max_size=3, unique=True)))
    return Case.of(draw(badge_sets(tables)), draw(transactions(tables, min_writes, max_writes)))
