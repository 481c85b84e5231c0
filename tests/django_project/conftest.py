"""pytest-django: badged's session fixture, imported as the README shows."""

from badged.contrib.django.testing import badged_triggers

__all__ = ["badged_triggers"]
