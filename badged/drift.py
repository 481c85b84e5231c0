"""What was changed by hand: how an object badged made differs from what it wants, in words. Pure.

``plan`` asks for each function and trigger that exists but differs: a reason starting with
``drifted:`` is a change made by hand (repaired, and counted as drift); ``badge.json changed``
means the object is exactly what badged last wrote, for a badge.json that has changed since.
"""

from __future__ import annotations

from badged.marks import COMMENT_MARK, comment_for, fingerprint, parse_comment
from badged.objects import TRIGGER_EVENT_BITS, TRIGGER_ROW, ActualFunction, ActualTrigger, FunctionDef, TriggerDef

#: how ``function_drift`` and ``trigger_drift`` begin a reason that is a change made by hand
DRIFTED = "drifted: "


def function_drift(desired: FunctionDef, actual: ActualFunction) -> str | None:
    """Why *actual* differs from *desired* ("drifted: …" when edited by hand), or None when it does not."""
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
        return "badge.json changed"
    return DRIFTED + "; ".join(differences)


def _written_by_badged(actual: ActualFunction) -> bool:
    """Whether the function is exactly what badged last wrote (its comment holds that digest)."""
    parsed = parse_comment(actual.comment)
    if parsed is None:
        return False
    badges, digest = parsed
    if digest != fingerprint(actual.body, *(actual.search_path or ())):
        return False
    return actual.comment in (comment_for(badges, digest), f"{COMMENT_MARK}: badge={','.join(badges)} sha256={digest}")


def trigger_drift(desired: TriggerDef, actual: ActualTrigger) -> str | None:
    """Why *actual* differs from *desired* ("drifted: …" when changed by hand), or None when it does not."""
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
        return DRIFTED + "; ".join(differences)
    if actual.comment == desired.comment:
        if set(actual.columns) != set(desired.columns) or actual.has_when != (desired.when is not None):
            return "drifted: trigger's UPDATE OF or WHEN changed"
        return None
    if parse_comment(actual.comment) is not None:
        return "badge.json changed"
    return "drifted: trigger recreated by hand"
