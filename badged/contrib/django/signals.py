"""``badge_earned``: sent once per award by ``manage.py listen_badges``.

Receivers get ``sender`` = the ``Award`` model class and the keyword arguments ``event``
(a :class:`badged.AwardEvent`: ``award_id``, ``badge``, ``badge_name``, ``user_id``,
``awarded_at``, ``table``), ``user_id`` (text, as stored) and ``badge`` (the badge's code)::

    from django.dispatch import receiver
    from badged.contrib.django.signals import badge_earned

    @receiver(badge_earned)
    def congratulate(sender, event, user_id, badge, **kwargs):
        notify(user_id, f"You earned {event.badge_name}!")

Delivery is at-least-once with ``--group``: receivers should be idempotent
(``event.award_id`` is unique).
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

from badged.events import AwardEvent

badge_earned: Signal = Signal()


def send_badge_earned(event: AwardEvent) -> list[tuple[Any, Any]]:
    """Send ``badge_earned`` for *event* (what ``listen_badges`` does); a receiver's exception propagates."""
    from badged.contrib.django.models import Award

    responses: list[tuple[Any, Any]] = badge_earned.send(
        sender=Award, event=event, user_id=event.user_id, badge=event.badge
    )
    return responses
