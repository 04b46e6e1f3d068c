#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    try:
        from django.core.exceptions import ImproperlyConfigured
        from django.core.management import execute_from_command_line
    except ImportError:
        sys.exit("error: Django is not installed for this Python: run `make install`, then "
                 "`.venv/bin/python manage.py ...`")
    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A configuration mistake (a missing secret, a bad variable): one line, not a traceback.
        sys.exit(f"error: {exc}")
