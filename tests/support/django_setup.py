"""Django, set up once in this process with the sample project's settings
(``sample_apps.django_host.settings``, unless ``DJANGO_SETTINGS_MODULE`` names others).

Import it before anything that reads Django's settings."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sample_apps.django_host.settings")
django.setup()
