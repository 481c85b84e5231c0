"""With pytest-django: the ``badged_triggers`` fixture installs the triggers in the test database."""

import pytest
from django.contrib.auth import get_user_model
from sketches.models import Sketch

from badged.contrib.django.models import Award
from badged.contrib.django.testing import flush_awards


@pytest.mark.django_db
def test_awards_in_a_test_transaction(badged_triggers: None) -> None:
    user = get_user_model().objects.create_user("ann")
    for _ in range(5):
        Sketch.objects.create(user=user)
    assert [award.badge_id for award in user.awards] == ["collector"]


@pytest.mark.django_db(transaction=True)
def test_awards_flushed_in_transactional_tests(badged_triggers: None) -> None:
    user = get_user_model().objects.create_user("bob")
    for _ in range(5):
        Sketch.objects.create(user=user)
    assert Award.objects.count() == 1
    flush_awards()
    assert Award.objects.count() == 0
