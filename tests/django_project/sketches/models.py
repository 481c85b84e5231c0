from django.conf import settings
from django.db import models


class Sketch(models.Model):
    """The seed's demo table: badges count a user's sketches and watch their views."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sketches")
    title = models.CharField(max_length=200, default="")
    hit_views = models.IntegerField(default=0)

    class Meta:
        db_table = "dummy_sketch"

    def __str__(self) -> str:
        return self.title
