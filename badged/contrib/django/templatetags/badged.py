"""Template tags: ``{% load badged %}``.

- ``{% for award in user|awards %}{{ award.badge.name }}{% endfor %}``: a user's awards, oldest first, with
  their badges (one query);
- ``{% badge_list user %}``: the same as ``<ul class="badged-badges">``, one ``<li data-badge="code">Name</li>``
  per badge earned (names escaped).
"""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from badged.contrib.django.models import Award

register = template.Library()


def awards(user: Any) -> Any:
    """The awards of *user* (a user or its id), with their badges."""
    if user is None or getattr(user, "is_anonymous", False):
        return Award.objects.none()
    return Award.objects.for_user(user).select_related("badge")


def badge_list(user: Any) -> SafeString:
    """``<ul class="badged-badges">`` of the badges *user* earned."""
    items = format_html_join("", '<li data-badge="{}">{}</li>',
                             ((award.badge_id, award.badge.name) for award in awards(user)))
    return format_html('<ul class="badged-badges">{}</ul>', items)


register.filter("awards", awards)
register.simple_tag(badge_list, name="badge_list")
