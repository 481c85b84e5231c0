"""Which column of badged's ``award_user`` view the ``Award.user`` relation joins on, for this project.

Awards store the user's id as text, so that any key type works; the view also holds it as bigint
(``user_integer``) and uuid (``user_uuid``), indexed. The relation uses the column of the user model's
primary key type, so a join compares like with like and uses an index; any other key type joins on the
text itself (``user_id``). Decided when badged's models are defined, so the user model is looked up then,
importing its app's models first if it is listed after badged in ``INSTALLED_APPS``.
"""

from __future__ import annotations

import importlib
from typing import Any

from django.apps import apps
from django.conf import settings

#: Django's integer field types (the auto fields are integers too)
_INTEGER_TYPES = frozenset({
    "AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField", "SmallIntegerField",
    "PositiveIntegerField", "PositiveBigIntegerField", "PositiveSmallIntegerField",
})


def early_user_model() -> Any:
    """The project's user model while the app registry is still loading models, or None without one."""
    try:
        app_label, model_name = settings.AUTH_USER_MODEL.split(".")
        config = apps.get_app_config(app_label)
    except (ValueError, LookupError):
        return None  # no django.contrib.auth (or no such app): no user relation
    try:
        return apps.get_model(app_label, model_name, require_ready=False)
    except LookupError:
        importlib.import_module(f"{config.name}.models")  # listed after badged: define its models now
        return apps.get_model(app_label, model_name, require_ready=False)


def user_key_column(model: Any) -> str:
    """The view's column matching *model*'s primary key type."""
    key = model._meta.pk
    while key.is_relation:  # a primary key that is a one-to-one to another model: that model's key type
        key = key.target_field
    kind = key.get_internal_type()
    if kind in _INTEGER_TYPES:
        return "user_integer"
    if kind == "UUIDField":
        return "user_uuid"
    return "user_id"  # the stored text itself (``user_key`` is the same text, for the field of that name)
