"""The Django app of badged: label ``badged``; its checks (``user.awards`` is ``Award.user``'s related name)."""

from __future__ import annotations

import sys
from typing import Any

from django.apps import AppConfig
from django.core import checks


class BadgedConfig(AppConfig):  # type: ignore[misc, unused-ignore]
    name = "badged.contrib.django"
    label = "badged"
    verbose_name = "Badges"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_reconcile_after_migrate, sender=self, dispatch_uid="badged.reconcile_on_migrate")
        checks.register(_check_user_accessor)
        from badged.contrib.django import checks as migration_checks

        checks.register(migration_checks.check_original_installed)
        checks.register(migration_checks.check_command_owner)
        checks.register(migration_checks.check_original_functions, checks.Tags.database)


def _check_user_accessor(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Warn when the user model already had an attribute of the relation's name (it was left alone)."""
    from badged.contrib.django.conf import get_settings
    from badged.contrib.django.models import Award, user_model

    attribute = get_settings().user_attribute
    model = user_model()
    if not attribute or model is None:
        return []
    accessor = model.__dict__.get(attribute)
    if getattr(getattr(accessor, "rel", None), "related_model", None) is Award:
        return []
    return [checks.Warning(
        f"{model.__name__} already has an attribute {attribute!r}, so badged did not install its awards "
        "accessor there",
        hint="set BADGED_USER_ATTRIBUTE to another name (or None), or use Award.objects.for_user(user)",
        obj=model,
        id="badged.W001",
    )]


def _reconcile_after_migrate(sender: Any, using: str = "default", verbosity: int = 1, **kwargs: Any) -> None:
    """``BADGED_RECONCILE_ON_MIGRATE``: ``migrate`` on badged's database ends with ``create_badge_triggers``.

    Sent once per ``migrate`` (and per flush), for badged's app alone: the app's tables exist by then.
    """
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from badged.contrib.django.conf import get_settings

    conf = get_settings()
    if not conf.reconcile_on_migrate or using != conf.database:
        return
    try:
        call_command("create_badge_triggers", database=using, verbosity=verbosity)
    except CommandError as exc:
        # the migrations have committed: a partial migrate (or `migrate app zero`) may leave badge.json's tables
        # missing; say so and leave the triggers for a later migrate or create_badge_triggers
        sys.stderr.write(f"badged: create_badge_triggers after migrate did not run: {exc}\n")
