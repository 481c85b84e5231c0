from django.apps import AppConfig


class TextUsersConfig(AppConfig):
    name = "textusers"
    default_auto_field = "django.db.models.AutoField"
