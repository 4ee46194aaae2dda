from django.http import HttpRequest, HttpResponse
from django.urls import path


def host(request: HttpRequest) -> HttpResponse:
    return HttpResponse("This route belongs to the Django host app.\n", content_type="text/plain")


urlpatterns = [path("host", host)]
