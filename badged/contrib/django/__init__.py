"""badged for Django: ``INSTALLED_APPS += ["badged.contrib.django"]`` (install ``badged[django]``).

- ``manage.py create_badge_triggers [--dry-run | --check]``: reconcile ``settings.BADGED_BADGES`` into the
  database of ``settings.BADGED_DATABASE`` (badged's reconcile, one transaction, on Django's connection);
  ``BADGED_RECONCILE_ON_MIGRATE = True`` runs it at the end of ``migrate``;
- ``manage.py listen_badges [--group NAME] [--since ID]``: send the ``badge_earned`` signal
  (``badged.contrib.django.signals``) once per award;
- ``manage.py badged_migrate_from django-pg-badges [--dry-run]``: replace the original package;
- read-only, unmanaged models ``Badge`` and ``Award`` (``Award.user`` a real relation: ``user.awards``), a
  read-only admin, template tags (``{% load badged %}``), system checks, and test helpers
  (``badged.contrib.django.testing``).

Settings are read by ``badged.contrib.django.conf``.
"""
