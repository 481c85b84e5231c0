"""badged for Django: ``INSTALLED_APPS += ["badged.contrib.django"]`` (install ``badged[django]``).

- ``manage.py create_badge_triggers [--dry-run | --check]``: reconcile ``settings.BADGES_FILE`` into the
  database of ``settings.BADGED_DATABASE`` (badged's reconcile, one transaction);
- ``manage.py listen_badges [--group NAME] [--since ID]``: send the ``badge_earned`` signal
  (``badged.contrib.django.signals``) once per award;
- read-only, unmanaged models ``Badge`` and ``Award`` over badged's tables, a read-only admin, and
  ``user.awards`` (a queryset of the user's awards) installed on the user model.

Settings are read by ``badged.contrib.django.conf``.
"""
