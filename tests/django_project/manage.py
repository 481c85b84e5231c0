#!/usr/bin/env python
"""The Django project of tests/test_django.py (database from BADGED_TEST_DJANGO_DSN)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
