import uuid

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A custom user model with a UUID primary key (BADGED_TEST_UUID_USERS=1)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
