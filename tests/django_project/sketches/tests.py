"""Django's own test runner on a project using badged (``manage.py test sketches``, run by tests/test_django.py).

They run with Django's integer user keys, and with user models keyed by a UUID and by text (BADGED_TEST_USERS).
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count, Prefetch
from django.template import Context, Template
from django.test import TestCase, TransactionTestCase

from badged.contrib.django.models import Award
from badged.contrib.django.testing import BadgedTestMixin
from sketches.models import Sketch

BADGES = os.environ["BADGED_TEST_BADGES_FILE"]


def collector(name: str, sketches: int = 5):
    model = get_user_model()
    text_key = model._meta.pk.get_internal_type() == "CharField"  # BADGED_TEST_USERS=text: no default key
    user = model.objects.create_user(name, **({"id": f"user-{name}"} if text_key else {}))
    for _ in range(sketches):
        Sketch.objects.create(user=user)
    return user


class InATestCase(BadgedTestMixin, TestCase):
    def test_awards_are_made_inside_the_tests_transaction(self) -> None:
        ann = collector("ann")
        self.assertEqual([a.badge_id for a in ann.awards], ["collector"])

    def test_create_badge_triggers_runs_inside_the_tests_transaction(self) -> None:
        bob = collector("bob")  # the test's transaction now holds locks on dummy_sketch

        def run(path: str) -> None:
            # a new trigger on dummy_sketch: on a connection of its own it would wait for this transaction's lock
            call_command("create_badge_triggers", badges=path, verbosity=0)  # a str, as call_command passes
            call_command("create_badge_triggers", file=path, verbosity=0)  # the original's keyword

        with_eraser(run)
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


ERASER = {"name": "Eraser", "code": "eraser", "trigger_condition": "delete", "condition": "true",
          "trigger_table": "dummy_sketch", "user_field": "user_id"}


def with_eraser(test):
    """Run *test* with a badge.json that adds a delete badge (a new trigger: DDL on dummy_sketch)."""
    more = [*json.loads(Path(BADGES).read_text()), ERASER]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        file.write(json.dumps(more))
        file.flush()
        return test(file.name)


def trigger_names():
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgname FROM pg_trigger WHERE starts_with(tgname::text, 'badged_')")
        return {name for (name,) in cursor.fetchall()}


class AcrossTransactionTestCases(BadgedTestMixin, TransactionTestCase):
    """Django's flush skips badged's (unmanaged) tables; the mixin empties them: no award leaks to the next."""

    def test_one(self) -> None:
        collector("ann")
        self.assertEqual(Award.objects.count(), 1)

    def test_two(self) -> None:
        collector("ann")
        self.assertEqual(Award.objects.count(), 1)

    def test_inside_an_atomic_block_that_has_run_nothing_yet_it_is_a_savepoint(self) -> None:
        before = trigger_names()

        def run(path: str) -> None:
            with contextlib.suppress(RuntimeError), transaction.atomic():
                call_command("create_badge_triggers", badges=path, verbosity=0)  # the block's first statement
                self.assertIn("badged_public$dummy_sketch$delete", trigger_names())
                raise RuntimeError("roll the block back")

        with_eraser(run)
        self.assertEqual(trigger_names(), before)  # rolled back with the caller's block: never committed alone

    def test_the_callers_timeouts_are_its_own_again(self) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '7s'")
            call_command("create_badge_triggers", badges=BADGES, verbosity=0)
            cursor.execute("SHOW lock_timeout")
            self.assertEqual(cursor.fetchone(), ("7s",))
