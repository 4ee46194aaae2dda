"""Django settings for the request-body tests: the sample project with ``Bodies`` and a
relay to $COYOTE_TEST_UPSTREAM (see ``tests/support/body_apps.py``) as coyote's clients.

    export DJANGO_SETTINGS_MODULE=tests.support.django_bodies
    gunicorn 'django.core.wsgi:get_wsgi_application()'
"""

from sample_apps.django_host.settings import *  # noqa: F403

COYOTE = {"CLIENTS": ["tests.support.body_apps:Bodies"]}
