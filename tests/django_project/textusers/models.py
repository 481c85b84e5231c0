from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A custom user model whose primary key is text (BADGED_TEST_USERS=text)."""

    id = models.CharField(primary_key=True, max_length=40)
