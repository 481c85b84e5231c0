"""badged: award badges inside PostgreSQL, with triggers reconciled from badge.json.

For applications::

    import badged

    for event in badged.subscribe(dsn, group="mailer"):
        send_congratulations(event.user_id, event.badge_name)

``async for event in badged.subscribe(...)`` works too. See ``badged.listen``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AwardEvent", "Subscription", "__version__", "subscribe"]

if TYPE_CHECKING:
    from badged.events import AwardEvent
    from badged.listen import Subscription, subscribe


def __getattr__(name: str) -> Any:
    """Import the subscription API on first use, so the CLI starts fast."""
    if name in ("subscribe", "Subscription"):
        from badged import listen

        return getattr(listen, name)
    if name == "AwardEvent":
        from badged.events import AwardEvent

        return AwardEvent
    raise AttributeError(f"module 'badged' has no attribute {name!r}")
