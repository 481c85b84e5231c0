"""What was changed by hand: how an object badged made differs from what it wants, in words. Pure.

``plan`` asks for each function and trigger that exists but differs, and gets a ``Drift``: either
changed by hand (repaired, and counted as drift), with what was changed in words, or exactly what badged
last wrote, for a badge.json (or a version of badged) that has changed since.
"""

from __future__ import annotations

from dataclasses import dataclass

from badged.marks import COMMENT_MARK, comment_for, fingerprint, parse_comment
from badged.objects import TRIGGER_EVENT_BITS, TRIGGER_ROW, ActualFunction, ActualTrigger, FunctionDef, TriggerDef


@dataclass(frozen=True)
class Drift:
    """How an existing object differs from what badged wants."""

    #: changed by hand (repaired, counted as drift); else badged wrote it for an earlier badge.json
    by_hand: bool
    #: what was changed by hand, one phrase each
    changes: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        return "drifted: " + "; ".join(self.changes) if self.by_hand else "badge.json changed"


#: an object exactly as badged last wrote it, for a badge.json that has changed since
REWRITTEN = Drift(by_hand=False)


def _by_hand(*changes: str) -> Drift:
    return Drift(by_hand=True, changes=changes)


def function_drift(desired: FunctionDef, actual: ActualFunction) -> Drift | None:
    """How *actual* differs from *desired*, or None when it does not."""
    differences = []
    if actual.body != desired.body:
        differences.append("function body edited by hand")
    if not actual.security_definer:
        differences.append("SECURITY DEFINER removed by hand")
    if actual.search_path != desired.search_path:
        differences.append("search_path changed by hand")
    if actual.returns != "trigger" or actual.language != "plpgsql":
        differences.append(f"redefined by hand as a {actual.language} function returning {actual.returns}")
    if actual.executors:
        differences.append(f"EXECUTE granted to {', '.join(actual.executors)}")
    if actual.comment != desired.comment and not differences:
        differences.append("comment changed by hand")
    if not differences:
        return None
    rewritten = (actual.body, actual.search_path, actual.comment) != (desired.body, desired.search_path,
                                                                       desired.comment)
    if rewritten and _written_by_badged(actual) and actual.security_definer and actual.language == "plpgsql":
        return REWRITTEN
    return _by_hand(*differences)


def _written_by_badged(actual: ActualFunction) -> bool:
    """Whether the function is exactly what badged last wrote (its comment holds that digest)."""
    parsed = parse_comment(actual.comment)
    if parsed is None:
        return False
    badges, digest = parsed
    if digest != fingerprint(actual.body, *(actual.search_path or ())):
        return False
    return actual.comment in (comment_for(badges, digest), f"{COMMENT_MARK}: badge={','.join(badges)} sha256={digest}")


def trigger_drift(desired: TriggerDef, actual: ActualTrigger) -> Drift | None:
    """How *actual* differs from *desired*, or None when it does not."""
    differences = []
    if actual.enabled == "D":
        differences.append("trigger disabled by hand")
    elif actual.enabled != "O":
        differences.append("trigger's firing mode changed by hand (ALTER TABLE ... ENABLE ALWAYS/REPLICA)")
    if (actual.function_schema, actual.function_name) != (desired.function.schema, desired.function.name):
        differences.append("trigger calls another function")
    if actual.tgtype != TRIGGER_ROW | TRIGGER_EVENT_BITS[desired.event.value]:
        differences.append("trigger events or timing changed")
    if differences:
        return _by_hand(*differences)
    if actual.comment == desired.comment:
        if set(actual.columns) != set(desired.columns) or actual.has_when != (desired.when is not None):
            return _by_hand("trigger's UPDATE OF or WHEN changed")
        return None
    if parse_comment(actual.comment) is not None:
        return REWRITTEN
    return _by_hand("trigger recreated by hand")
