"""Django's own test runner on a project using badged (``manage.py test sketches``, run by tests/test_django.py).

They run once with Django's integer user keys and once with a UUID user model (BADGED_TEST_UUID_USERS).
"""

import json
import os
import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count, Prefetch
from django.template import Context, Template
from django.test import TestCase, TransactionTestCase

from badged.contrib.django.models import Award
from badged.contrib.django.testing import BadgedTestMixin
from sketches.models import Sketch

BADGES = os.environ["BADGED_TEST_BADGES_FILE"]


def collector(name: str, sketches: int = 5):
    user = get_user_model().objects.create_user(name)
    for _ in range(sketches):
        Sketch.objects.create(user=user)
    return user


class InATestCase(BadgedTestMixin, TestCase):
    def test_awards_are_made_inside_the_tests_transaction(self) -> None:
        ann = collector("ann")
        self.assertEqual([a.badge_id for a in ann.awards], ["collector"])

    def test_create_badge_triggers_runs_inside_the_tests_transaction(self) -> None:
        bob = collector("bob")  # the test's transaction now holds locks on dummy_sketch
        eraser = {"name": "Eraser", "code": "eraser", "trigger_condition": "delete", "condition": "true",
                  "trigger_table": "dummy_sketch", "user_field": "user_id"}
        more = [*json.loads(Path(BADGES).read_text()), eraser]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
            file.write(json.dumps(more))
            file.flush()
            # a new trigger on dummy_sketch: on a connection of its own it would wait for this transaction's lock
            call_command("create_badge_triggers", badges=file.name, verbosity=0)  # a str, as call_command passes
            call_command("create_badge_triggers", file=file.name, verbosity=0)  # the original's keyword
        Sketch.objects.filter(user=bob).first().delete()
        self.assertEqual(sorted(a.badge_id for a in bob.awards), ["collector", "eraser"])

    def test_the_user_relation_filters_annotates_and_prefetches(self) -> None:
        User = get_user_model()
        ann, _, _ = collector("ann"), collector("bob", 2), collector("cy")
        self.assertEqual(set(User.objects.filter(awards__badge="collector").values_list("username", flat=True)),
                         {"ann", "cy"})
        with self.assertNumQueries(1):
            counts = dict(User.objects.annotate(n=Count("awards")).values_list("username", "n"))
        self.assertEqual(counts, {"ann": 1, "bob": 0, "cy": 1})
        with self.assertNumQueries(2):  # users, then every user's awards: not one query per user
            earned = {u.username: sorted(a.badge_id for a in u.awards.all())
                      for u in User.objects.prefetch_related(Prefetch("awards"))}
        self.assertEqual(earned, {"ann": ["collector"], "bob": [], "cy": ["collector"]})
        award = Award.objects.select_related("user", "badge").get(user=ann)
        self.assertEqual((award.user, award.user_id, award.user_key, award.badge.name),
                         (ann, ann.pk, str(ann.pk), "Collector"))
        self.assertEqual(Award.objects.for_user(ann).get(), award)
        self.assertEqual(list(ann.awards.values_list("badge", flat=True)), ["collector"])

    def test_an_award_outlives_its_user(self) -> None:
        ann = collector("ann")
        Sketch.objects.filter(user=ann).delete()
        ann.delete()
        award = Award.objects.get()
        self.assertIsNone(award.user)

    def test_templates_show_a_users_badges(self) -> None:
        ann = collector("ann")
        text = Template("{% load badged %}{% for a in user|awards %}[{{ a.badge.name }}]{% endfor %}"
                        "{% badge_list user %}").render(Context({"user": ann}))
        self.assertEqual(text, '[Collector]<ul class="badged-badges"><li data-badge="collector">Collector</li></ul>')


class AcrossTransactionTestCases(BadgedTestMixin, TransactionTestCase):
    """Django's flush skips badged's (unmanaged) tables; the mixin empties them: no award leaks to the next."""

    def test_one(self) -> None:
        collector("ann")
        self.assertEqual(Award.objects.count(), 1)

    def test_two(self) -> None:
        collector("ann")
        self.assertEqual(Award.objects.count(), 1)
