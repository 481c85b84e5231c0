"""Read-only admin for badges and awards: badge.json and the triggers are the only writers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib import admin
from django.db.models import Count

from badged.contrib.django.models import Award, Badge

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _display(description: str, ordering: str) -> Callable[[_Method], _Method]:
    """``admin.display``, typed."""
    decorator: Callable[[_Method], _Method] = admin.display(description=description, ordering=ordering)
    return decorator


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[misc, unused-ignore]
    """List and view only: no add, change or delete (and so no bulk actions)."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(Badge)
class BadgeAdmin(ReadOnlyAdmin):
    list_display = ("code", "name", "trigger_table", "trigger_condition", "awards_count", "removed_at")
    list_filter = ("trigger_condition",)
    search_fields = ("code", "name", "trigger_table")

    def get_queryset(self, request: Any) -> Any:
        return super().get_queryset(request).annotate(awards_count=Count("awards"))

    @_display(description="awards", ordering="awards_count")
    def awards_count(self, badge: Badge) -> int:
        return int(badge.awards_count)


@admin.register(Award)
class AwardAdmin(ReadOnlyAdmin):
    list_display = ("id", "badge_code", "badge_name", "user_key", "awarded_at")
    list_filter = ("badge",)
    list_select_related = ("badge",)
    search_fields = ("user_key", "badge__code", "badge__name")
    ordering = ("-awarded_at", "-id")

    @_display(description="badge", ordering="badge")
    def badge_code(self, award: Award) -> str:
        return str(award.badge_id)

    @_display(description="name", ordering="badge__name")
    def badge_name(self, award: Award) -> str:
        return str(award.badge.name)
