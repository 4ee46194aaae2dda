from sample_apps.django_host.settings import *  # noqa: F403

COYOTE = {
    "CLIENTS": ["sample_apps.deadwood.saloon:Saloon", "tests.support.django_site.jar:Jar"],
}
