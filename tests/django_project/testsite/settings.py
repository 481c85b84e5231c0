"""A small Django project using badged.contrib.django, configured from the environment.

BADGED_TEST_DJANGO_DSN: libpq connection string (URL or key=value) of the test database.
BADGED_TEST_BADGES_FILE: path of badge.json.
BADGED_TEST_ORIGINAL: a folder holding the original django-pg-badges' package ``badges``, installed first
(as a project that adds badged to INSTALLED_APPS after it has).
BADGED_TEST_POST_MIGRATE: set BADGED_RECONCILE_ON_MIGRATE.
BADGED_TEST_USERS: ``uuid`` or ``text``: a user model with a UUID (app ``uuidusers``) or text (``textusers``)
primary key.
"""

import os
import sys

from psycopg import conninfo

_params = conninfo.conninfo_to_dict(os.environ.get("BADGED_TEST_DJANGO_DSN", ""))

SECRET_KEY = "badged-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "testsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "badged.contrib.django",
    "sketches",
]

if os.environ.get("BADGED_TEST_USERS") in ("uuid", "text"):  # a user model with a UUID or a text primary key
    _USERS_APP = f"{os.environ['BADGED_TEST_USERS']}users"
    INSTALLED_APPS.append(_USERS_APP)  # listed after badged: its models are imported early for Award.user
    AUTH_USER_MODEL = f"{_USERS_APP}.User"

BADGED_RECONCILE_ON_MIGRATE = bool(os.environ.get("BADGED_TEST_POST_MIGRATE"))

if os.environ.get("BADGED_TEST_ORIGINAL"):
    sys.path.insert(0, os.environ["BADGED_TEST_ORIGINAL"])
    INSTALLED_APPS.insert(INSTALLED_APPS.index("badged.contrib.django"), "badges")

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.pop("dbname", ""),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "OPTIONS": _params,
    },
}

BADGES_FILE = os.environ.get("BADGED_TEST_BADGES_FILE")
