"""Which advisory keys order the checks of a badge: its user's alone, or its function's too (see ``locks``).

The trigger functions, ``badged run``'s recheck and ``badged backfill`` must all
answer this the same way, or two of them could check one badge under different keys.

Pure: no database.
"""

from __future__ import annotations

from badged.objects import Table
from badged.routines import Routines
from badged.spec import Badge


def reads_other_rows(badge: Badge, routines: Routines, search_path: tuple[str, ...]) -> bool:
    """Whether the condition's value can depend on rows other than the changed one (then writes can race)."""
    condition = badge.condition
    if condition.row_local:
        return False
    if condition.runs_query:
        return True
    # A function that is not built in may read any table: assume it does.
    return not all(routines.is_builtin(name, search_path) for name in condition.calls)


def scoped_to_user(badge: Badge, table: Table, routines: Routines, search_path: tuple[str, ...]) -> bool:
    """Whether every row the condition reads belongs to the changed row's user, in the trigger's own table.

    Then every write that can change its answer is a check of the same user, and the
    user's key alone orders them (see ``locks``). ``count(id) >= 5 from dummy_sketch
    where user_id = NEW.user_id`` with ``user_field`` ``user_id`` is the common case.
    """
    condition = badge.condition
    if condition.from_table is None or badge.user_field not in condition.scope_columns:
        return False
    schema, name = condition.from_table
    same_table = name == table.name and schema in (None, table.schema) and not name.startswith("pg_")
    only_builtins = all(routines.is_builtin(call, search_path) for call in condition.calls)
    return same_table and only_builtins and not condition.has_subquery


def needs_function_lock(badge: Badge, table: Table, routines: Routines, search_path: tuple[str, ...]) -> bool:
    """Whether checks of *badge* are ordered by their function's key, not the user's alone (see ``locks``)."""
    return reads_other_rows(badge, routines, search_path) and not scoped_to_user(badge, table, routines, search_path)
