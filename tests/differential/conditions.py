"""Random badges over the differential schema: the three condition shapes, tiers and filtered families.

Each generated badge carries two texts of its condition: the one written in badge.json (bare columns,
CASE at the top, ...) and the oracle's, an explicit plpgsql expression with ``NEW.``/``OLD.`` spelled out.
Nothing here imports badged: what a condition means is stated from the README, not derived from the
renderer. The one rule of the README the oracle needs besides PostgreSQL's own is which update badges are
checked only when a column they read changes value: those whose condition reads only columns of ``NEW``,
with no function call, subquery or clock (``Generated.changed_columns``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from tests.differential.schema import BY_NAME

EVENTS = ("insert", "update", "delete")
THRESHOLDS = ("0", "1", "5", "10", "50")
COUNTS = ("1", "2", "3", "4")


@dataclass(frozen=True)
class Atom:
    """A boolean expression over the changed row; ``{r}`` is where ``NEW.``/``OLD.`` (or nothing) goes."""

    template: str
    columns: frozenset[str]
    #: no function call, subquery or clock: an update badge made of plain atoms is column-filtered
    plain: bool = True
    #: reads OLD and NEW explicitly (update badges only), so it is never written with bare columns
    old_and_new: bool = False
    #: has a subquery whose own columns would clash with bare names
    explicit_only: bool = False


def _atoms(*items: tuple[str, set[str]] | Atom) -> tuple[Atom, ...]:
    return tuple(item if isinstance(item, Atom) else Atom(item[0], frozenset(item[1])) for item in items)


ROW_ATOMS: dict[str, tuple[Atom, ...]] = {
    "posts": _atoms(
        ("{r}views > {k}", {"views"}),
        ("{r}views is null", {"views"}),
        ("{r}kind = 'x'", {"kind"}),
        ("{r}kind is distinct from 'y'", {"kind"}),
        ("{r}meta->>'k' = 'v'", {"meta"}),
        ("{r}meta::text like '%w%'", {"meta"}),
        ("({r}meta->>'k') is not null", {"meta"}),
        ("coalesce({r}views, 0) >= {k}", {"views"}),
        ("{r}views between {k} and {k2}", {"views"}),
        ("{r}user_id = 2", {"user_id"}),
        ("100 / {r}views > {k}", {"views"}),  # division by zero when views = 0: the badge is skipped
        ("case when {r}kind = 'x' then {r}views > {k} else {r}views > {k2} end", {"kind", "views"}),
        ("not (case when {r}kind = 'x' then {r}views > {k} else {r}views > {k2} end)", {"kind", "views"}),
        Atom("abs({r}views) > {k}", frozenset({"views"}), plain=False),
        Atom("length({r}kind) = 1", frozenset({"kind"}), plain=False),
        Atom("exists (select 1 from notes n where n.ref = {r}user_id)", frozenset({"user_id"}),
             plain=False, explicit_only=True),
        Atom("NEW.views > OLD.views", frozenset({"views"}), plain=False, old_and_new=True),
        Atom("OLD.kind is distinct from NEW.kind", frozenset({"kind"}), plain=False, old_and_new=True),
    ),
    "notes": _atoms(
        ("{r}score > {k}", {"score"}),
        ("{r}score is not null", {"score"}),
        ("{r}score = 10", {"score"}),  # 10 and 10.0 are equal but stored differently
        ("{r}tag = 'x'", {"tag"}),
        ("{r}ref = 2", {"ref"}),
        ("{r}score / ({r}ref - 2) > 1", {"score", "ref"}),  # division by zero when ref = 2
        ("case when {r}tag = 'x' then {r}score >= 1 else {r}score >= {k} end", {"tag", "score"}),
        Atom("lower({r}tag) = 'x'", frozenset({"tag"}), plain=False),
        Atom("NEW.score is distinct from OLD.score", frozenset({"score"}), plain=False, old_and_new=True),
    ),
    "entries": _atoms(
        ("{r}amount >= {k}", {"amount"}),
        ("{r}amount is null", {"amount"}),
        ("100 / {r}amount > {k}", {"amount"}),  # division by zero when amount = 0
        ("{r}kind = 'b'", {"kind"}),
        ("{r}spot is not null", {"spot"}),
        ("{r}spot ~= point '(1,2)'", {"spot"}),
        ("case when {r}kind = 'a' then {r}amount > 1 else {r}amount > {k} end", {"kind", "amount"}),
        Atom("NEW.amount > OLD.amount", frozenset({"amount"}), plain=False, old_and_new=True),
    ),
}

#: aggregate comparisons over each table's own columns (bare names belong to the query's FROM)
AGGREGATES: dict[str, tuple[str, ...]] = {
    "posts": (
        "count(*) >= {n}", "count(views) >= {n}", "count(distinct kind) >= {n}", "sum(views) >= {k}",
        "max(views) > {k}", "min(views) < {k}", "avg(views) > {k}",
        "percentile_disc(0.5) within group (order by views) >= {k}",
        "mode() within group (order by kind) = 'x'", "bool_or(kind = 'x')", "every(views > 1)",
        "string_agg(kind, ',') like '%x%'", "total(views) >= {k}", "count(*) filter (where kind = 'y') >= {n}",
        "coalesce(sum(views), 0) < {k}", "regr_count(views, id) >= {n}", "max(views) - min(views) >= {k}",
        "json_agg(kind)::text like '%z%'", "count(*) / count(views) >= {n}",  # division by zero: no views
    ),
    "notes": (
        "count(*) >= {n}", "sum(score) >= {k}", "max(score) > {k}", "bool_or(tag = 'x')",
        "count(distinct tag) >= {n}", "avg(score) >= {k}", "every(score > 1)",
    ),
    "entries": (
        "count(*) >= {n}", "sum(amount) >= {k}", "max(amount) > {k}", "count(distinct kind) >= {n}",
        "percentile_disc(0.5) within group (order by amount) >= {k}", "total(amount) >= {k}",
    ),
}

#: WHERE parts a member of a family adds to its table's "rows of this user" scan
EXTRAS: dict[str, tuple[str, ...]] = {
    "posts": ("", " and kind = 'x'", " and views > 5", " and kind is not null", " and id <> {R}.id",
              " and meta->>'k' = 'v'"),
    "notes": ("", " and tag = 'x'", " and score > 1", " and ref = {R}.ref"),
    "entries": ("", " and kind = 'a'", " and amount > 1", " and kind = {R}.kind"),
}

#: query tails that are not "this user's rows of this table": other tables, every row, one row
OTHER_TAILS: dict[str, tuple[str, ...]] = {
    "posts": (
        "{aggs} from posts where kind = 'x'",
        "{aggs} from posts",
        "count(*) >= {n} from notes where author = {R}.user_id::text",
        "sum(score) >= {k} from notes where author = {R}.user_id::text",
        "views > {k} from posts where id = {R}.id",
        "views > {k} from posts where user_id = {R}.user_id",  # fails when the user has two posts
    ),
    "notes": (
        "{aggs} from notes where tag = 'y'",
        "count(*) >= {n} from posts where user_id::text = {R}.author",
    ),
    "entries": (
        "{aggs} from entries where kind = 'b'",
        "count(*) >= {n} from posts where user_id = 1 and {R}.amount > 0",
    ),
}

@dataclass(frozen=True)
class Generated:
    """One badge, before it gets its code."""

    table: str
    event: str
    user_field: str
    #: the condition as written in badge.json
    written: str
    #: the same, as one plpgsql boolean expression with the trigger row spelled out
    oracle: str
    #: for update badges checked only when a column they read changes value: those columns
    changed_columns: tuple[str, ...] | None = None


def _row_variable(event: str) -> str:
    return "OLD" if event == "delete" else "NEW"


@st.composite
def _fill(draw: st.DrawFn, template: str, row: str) -> str:
    """*template* with its thresholds drawn and ``{R}`` as *row*."""
    low, high = sorted(draw(st.lists(st.sampled_from(THRESHOLDS), min_size=2, max_size=2)), key=int)
    return template.replace("{k}", low).replace("{k2}", high).replace("{n}", draw(st.sampled_from(COUNTS))) \
        .replace("{R}", row)


@st.composite
def row_badge(draw: st.DrawFn, table: str, event: str, user_field: str) -> Generated:
    """An expression over the changed row: one or two atoms, explicit (``NEW.views``) or bare (``views``)."""
    atoms = [atom for atom in ROW_ATOMS[table] if event == "update" or not atom.old_and_new]
    chosen = draw(st.lists(st.sampled_from(atoms), min_size=1, max_size=2))
    bare = draw(st.booleans()) and not any(atom.old_and_new or atom.explicit_only for atom in chosen)
    row = _row_variable(event)
    if event == "update" and not bare and not any(atom.old_and_new for atom in chosen):
        row = draw(st.sampled_from(("NEW", "OLD")))
    filled = [draw(_fill(atom.template, row)) for atom in chosen]
    joiner = draw(st.sampled_from((" and ", " or ")))

    def combine(parts: list[str]) -> str:
        return parts[0] if len(parts) == 1 else joiner.join(f"({part})" for part in parts)

    written = combine([part.replace("{r}", "" if bare else f"{row}.") for part in filled])
    oracle = combine([part.replace("{r}", f"{row}.") for part in filled])
    changed = None
    if event == "update" and row == "NEW" and all(atom.plain for atom in chosen):
        changed = tuple(sorted(set().union(*(atom.columns for atom in chosen))))
    return Generated(table, event, user_field, written, f"({oracle})", changed)


@st.composite
def tail_badge(draw: st.DrawFn, table: str, event: str, user_field: str) -> Generated:
    """A query tail: this user's rows with an extra filter (families share a scan), or other rows."""
    row = _row_variable(event)
    if event == "update":
        row = draw(st.sampled_from(("NEW", "OLD")))
    aggregates = draw(st.lists(st.sampled_from(AGGREGATES[table]), min_size=1, max_size=3))
    aggs = draw(st.sampled_from((" and ", " or "))).join(aggregates)
    if draw(st.integers(0, 3)) > 0:
        extra = draw(st.sampled_from(EXTRAS[table]))
        template = f"{{aggs}} from {table} where {user_field} = {{R}}.{user_field}{extra}"
    else:
        template = draw(st.sampled_from(OTHER_TAILS[table]))
    tail = draw(_fill(template.replace("{aggs}", aggs), row))
    return Generated(table, event, user_field, tail, f"(SELECT {tail})")


@st.composite
def badge_group(draw: st.DrawFn, tables: tuple[str, ...]) -> list[Generated]:
    """Badges of one table, event and user field: they share one trigger function, so tiers and families meet."""
    table = draw(st.sampled_from(tables))
    event = draw(st.sampled_from(EVENTS))
    user_field = draw(st.sampled_from(BY_NAME[table].user_fields))
    kind = st.one_of(row_badge(table, event, user_field), tail_badge(table, event, user_field))
    return draw(st.lists(kind, min_size=1, max_size=6))


def badge_sets(tables: tuple[str, ...]) -> st.SearchStrategy[list[Generated]]:
    """Badges on *tables*: a few groups, so one table often has several kinds of trigger."""
    groups = st.lists(badge_group(tables), min_size=1, max_size=4)
    return groups.map(lambda drawn: [badge for group in drawn for badge in group])
