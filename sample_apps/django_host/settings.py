"""A minimal Django project with one view of its own and the Deadwood Saloon through coyote.

python sample_apps/django_host/manage.py runserver 8000
gunicorn sample_apps.django_host.wsgi:application
uvicorn sample_apps.django_host.asgi:application
"""

SECRET_KEY = "sample-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "sample_apps.django_host.urls"
INSTALLED_APPS = ["coyote_mw.adapters.django"]
MIDDLEWARE = [
    "coyote_mw.adapters.django.CoyoteMiddleware",
    "django.middleware.common.CommonMiddleware",
]
COYOTE = {"CLIENTS": ["sample_apps.deadwood.saloon:Saloon"]}
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
WSGI_APPLICATION = "sample_apps.django_host.wsgi.application"
