"""badged: award badges inside PostgreSQL, with triggers reconciled from badge.json.

For applications::

    import badged

    with badged.subscribe(dsn, group="mailer") as events:
        for event in events:
            send_congratulations(event.user_id, event.badge_name)

``async with`` / ``async for`` work too, natively on asyncio (``badged.listen``);
``await badged.forward(dsn, sink, group=...)`` runs a sink (``badged.sinks``) as ``badged run`` does.
The library logs through ``logging`` (logger ``badged``) and configures nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from badged.version import __version__

__all__ = ["AwardEvent", "Subscription", "__version__", "forward", "subscribe"]

if TYPE_CHECKING:
    from badged.events import AwardEvent
    from badged.forwarder import forward
    from badged.listen import Subscription, subscribe


def __getattr__(name: str) -> Any:
    """Import the subscription API on first use, so the CLI starts fast."""
    if name in ("subscribe", "Subscription"):
        from badged import listen

        return getattr(listen, name)
    if name == "forward":
        from badged.forwarder import forward

        return forward
    if name == "AwardEvent":
        from badged.events import AwardEvent

        return AwardEvent
    raise AttributeError(f"module 'badged' has no attribute {name!r}")
