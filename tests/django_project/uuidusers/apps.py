from django.apps import AppConfig


class UuidUsersConfig(AppConfig):
    name = "uuidusers"
    default_auto_field = "django.db.models.AutoField"
