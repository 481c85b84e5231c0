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

``Award`` reads the view ``<BADGED_SCHEMA>.award_user``, which badged's reconcile creates beside the award
table: the user's id as stored (text: ``award.user_key``), and also as bigint and uuid, indexed. ``award.user``
is a real foreign key to the user model (without a database constraint) on the column matching the user
model's primary key, so the ORM joins and filters as for any relation: ``user.awards.all()`` (the related
name is ``BADGED_USER_ATTRIBUTE``, default ``awards``), ``Award.objects.filter(user=u)``,
``User.objects.annotate(n=Count("awards"))``, ``prefetch_related("awards")``, ``filter(awards__badge="star")``.
A key of another type (text) joins on the stored text. ``award.user`` is None when the user is gone (awards
outlive users). ``Award.badge`` is a foreign key to ``Badge`` without a database constraint
(``award.badge_id`` is the badge's code; ``award.badge.name`` joins); badge rows are never deleted by badged,
only marked ``removed_at``, so every award finds its badge.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.db import models
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor

from badged.contrib.django.conf import get_settings, qualified_table
from badged.contrib.django.user_key import early_user_model, user_key_column
from badged.own_schema import AWARD_USER_VIEW, BADGE_TABLE


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
        """Awards of *user* (a user instance or its id, of any key type)."""
        awards: AwardQuerySet = self.filter(user_key=user_key(user))
        return awards


class AwardManager(models.Manager.from_queryset(AwardQuerySet)):  # type: ignore[misc]
    """Iterable, so ``for award in user.awards`` reads like the queryset it was before it became a relation."""

    def __iter__(self) -> Any:
        return iter(self.all())


class _UserOrNone(ForwardManyToOneDescriptor):  # type: ignore[misc]
    """``award.user``: None, not an exception, for a user deleted since (awards outlive their users)."""

    def __get__(self, instance: Any, cls: Any = None) -> Any:
        try:
            return super().__get__(instance, cls)
        except ObjectDoesNotExist:  # the key is stored, the user is gone: Django raises the model's DoesNotExist
            self.field.set_cached_value(instance, None)  # asked again, no second query
            return None


class _UserKey(models.ForeignKey):  # type: ignore[misc]
    forward_related_accessor_class = _UserOrNone


_USER_MODEL = early_user_model()
#: the view's column holding the user's id as the user model's key type; None without a user model
_USER_COLUMN = user_key_column(_USER_MODEL) if _USER_MODEL is not None else None
#: ``user.awards``: the relation's name on the user model, unless the model has that name already (badged.W001)
_ATTRIBUTE = get_settings().user_attribute
_RELATED_NAME = _ATTRIBUTE if _ATTRIBUTE and not hasattr(_USER_MODEL, _ATTRIBUTE) else "+"


class Award(models.Model):  # type: ignore[misc, unused-ignore]
    """A badge earned by a user (written by badged's triggers; read-only here)."""

    id = models.BigAutoField(primary_key=True)
    badge = models.ForeignKey(Badge, on_delete=models.DO_NOTHING, db_column="badge", db_constraint=False,
                              related_name="awards")
    #: the user's id as stored (text, whatever the key type)
    user_key = models.TextField()
    if _USER_COLUMN is not None:
        user = _UserKey(settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_column=_USER_COLUMN,
                        db_constraint=False, null=True, related_name=_RELATED_NAME)
    awarded_at = models.DateTimeField()

    objects = AwardManager()

    class Meta:
        managed = False
        db_table = qualified_table(AWARD_USER_VIEW)
        ordering = ("awarded_at", "id")

    def __str__(self) -> str:
        return f"{self.badge_id} earned by user {self.user_key}"


def user_model() -> Any:
    """The project's user model, or None without ``django.contrib.auth``."""
    try:
        return get_user_model()
    except (ImproperlyConfigured, LookupError):
        return None
