"""Read-only, unmanaged models over badged's own tables, and ``user.awards``.

badged creates and owns ``<BADGED_SCHEMA>.badge`` and ``<BADGED_SCHEMA>.award`` (on the first
``create_badge_triggers``); the triggers write awards. These models only let the ORM and the admin
read them: ``managed = False`` (no migrations create, alter or flush them) and the app ships no
migrations, so changing ``BADGED_SCHEMA`` never makes ``makemigrations`` find changes.

The tables live outside the ``public`` schema. ``db_table`` is the already-quoted
``'"badged"."award"'``, which Django's PostgreSQL backend uses as it is: every query names the
table schema-qualified, whatever the connection's ``search_path``. What does not understand such a
name (``inspectdb``, ``sqlsequencereset``, Django's test-database flush) is never pointed at these
models because they are unmanaged.

Awards store the user's id as text (any key type works), so ``Award.user_id`` cannot be a real
foreign key to the user model: use ``user.awards`` (installed on the user model when the app is
ready, name set by ``BADGED_USER_ATTRIBUTE``), ``Award.objects.for_user(user)`` and ``award.user``.
``Award.badge`` is a foreign key to ``Badge`` without a database constraint (``award.badge_id`` is
the badge's code; ``award.badge.name`` joins); badge rows are never deleted by badged, only marked
``removed_at``, so every award finds its badge.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models

from badged.contrib.django.conf import qualified_table
from badged.own_schema import AWARD_TABLE, BADGE_TABLE


def user_key(user: Any) -> str:
    """How awards store *user* (a model instance or a raw id): its primary key as text."""
    return str(getattr(user, "pk", user))


class BadgeQuerySet(models.QuerySet):  # type: ignore[misc, unused-ignore]
    def active(self) -> BadgeQuerySet:
        """Badges still in badge.json (removed ones keep their row and awards)."""
        active: BadgeQuerySet = self.filter(removed_at__isnull=True)
        return active


class Badge(models.Model):  # type: ignore[misc, unused-ignore]
    """A badge of badge.json, as badged's registry stores it (``removed_at`` once it left badge.json)."""

    code = models.TextField(primary_key=True)
    name = models.TextField()
    trigger_table = models.TextField()
    trigger_condition = models.TextField()
    condition = models.TextField()
    user_field = models.TextField()
    updated_at = models.DateTimeField()
    removed_at = models.DateTimeField(null=True, blank=True)

    objects = BadgeQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = qualified_table(BADGE_TABLE)
        ordering = ("code",)

    def __str__(self) -> str:
        return str(self.name)


class AwardQuerySet(models.QuerySet):  # type: ignore[misc, unused-ignore]
    def for_user(self, user: Any) -> AwardQuerySet:
        """Awards of *user* (a user instance or its id)."""
        awards: AwardQuerySet = self.filter(user_id=user_key(user))
        return awards


class Award(models.Model):  # type: ignore[misc, unused-ignore]
    """A badge earned by a user (written by badged's triggers; read-only here)."""

    id = models.BigAutoField(primary_key=True)
    badge = models.ForeignKey(Badge, on_delete=models.DO_NOTHING, db_column="badge", db_constraint=False,
                              related_name="awards")
    user_id = models.TextField()
    awarded_at = models.DateTimeField()

    objects = AwardQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = qualified_table(AWARD_TABLE)
        ordering = ("awarded_at", "id")

    def __str__(self) -> str:
        return f"{self.badge_id} earned by user {self.user_id}"

    @property
    def user(self) -> Any:
        """The user who earned it, or None (deleted, or an id the user model's key cannot read)."""
        model = user_model()
        if model is None:
            return None
        try:
            return model._default_manager.filter(pk=self.user_id).first()
        except (ValueError, TypeError, ValidationError):
            return None


def user_model() -> Any:
    """The project's user model, or None without ``django.contrib.auth``."""
    try:
        return get_user_model()
    except (ImproperlyConfigured, LookupError):
        return None


class UserAwards:
    """``user.awards``: the queryset of that user's awards (a new one on each access)."""

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        return Award.objects.for_user(instance)


def install_user_accessor(attribute: str) -> bool:
    """Put ``UserAwards`` on the user model as *attribute*; False if that name is taken (left alone)."""
    model = user_model()
    if model is None:
        return False
    if isinstance(model.__dict__.get(attribute), UserAwards):
        return True
    if hasattr(model, attribute):
        return False
    setattr(model, attribute, UserAwards())
    return True
