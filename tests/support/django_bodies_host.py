"""``tests.support.django_bodies`` with ``PRECEDENCE: "host"`` and a Django view that
reads the body of every ``/inproc/...`` request, then answers 404: coyote's handler must
still get the body."""

from django.http import HttpRequest, HttpResponseNotFound
from django.urls import path

from tests.support.django_bodies import *  # noqa: F403

COYOTE = {"CLIENTS": ["tests.support.body_apps:Bodies"], "PRECEDENCE": "host"}
ROOT_URLCONF = "tests.support.django_bodies_host"


def reads_then_404(request: HttpRequest, name: str) -> HttpResponseNotFound:
    return HttpResponseNotFound(b"read %d bytes" % len(request.body))


urlpatterns = [path("inproc/<str:name>", reads_then_404)]
