import json
import sys
from typing import Any

from django.apps import AppConfig


class SketchesConfig(AppConfig):
    name = "sketches"

    def ready(self) -> None:
        from badged.contrib.django.signals import badge_earned

        badge_earned.connect(print_award, dispatch_uid="sketches.print_award")


def print_award(sender: Any, event: Any, user_id: str, badge: str, **kwargs: Any) -> None:
    """One JSON line per badge_earned signal, for the test to read."""
    line = {"sender": f"{sender._meta.app_label}.{sender.__name__}", "award_id": event.award_id, "badge": badge,
            "badge_name": event.badge_name, "user_id": user_id}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
