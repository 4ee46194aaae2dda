from django.apps import AppConfig


class CoyoteConfig(AppConfig):
    name = "coyote_mw.adapters.django"
    label = "coyote_mw"
    verbose_name = "coyote_mw"
