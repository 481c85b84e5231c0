"""The Django app of badged: label ``badged``; installs ``user.awards`` when ready."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


class BadgedConfig(AppConfig):  # type: ignore[misc, unused-ignore]
    name = "badged.contrib.django"
    label = "badged"
    verbose_name = "Badges"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from badged.contrib.django.conf import get_settings
        from badged.contrib.django.models import install_user_accessor

        attribute = get_settings().user_attribute
        if attribute:
            install_user_accessor(attribute)
        checks.register(_check_user_accessor)
        from badged.contrib.django import checks as migration_checks

        checks.register(migration_checks.check_original_installed)
        checks.register(migration_checks.check_command_owner)
        checks.register(migration_checks.check_original_functions, checks.Tags.database)


def _check_user_accessor(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Warn when the user model already had an attribute of the accessor's name (it was left alone)."""
    from badged.contrib.django.conf import get_settings
    from badged.contrib.django.models import UserAwards, user_model

    attribute = get_settings().user_attribute
    model = user_model()
    if not attribute or model is None or isinstance(model.__dict__.get(attribute), UserAwards):
        return []
    if not hasattr(model, attribute):
        return []
    return [checks.Warning(
        f"{model.__name__} already has an attribute {attribute!r}, so badged did not install its awards "
        "accessor there",
        hint="set BADGED_USER_ATTRIBUTE to another name (or None), or use Award.objects.for_user(user)",
        obj=model,
        id="badged.W001",
    )]
