"""The registration payload, decoded strictly with pydantic (unknown fields refused)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from coyote_mw.errors import InvalidRoute
from coyote_mw.http.urls import canonical_url
from coyote_mw.registry.remotes import MAX_TTL, MIN_TTL
from coyote_mw.routing.patterns import parse_method, parse_pattern

__all__ = ["MAX_ROUTES", "RegistrationIn", "RouteIn"]

MAX_ROUTES = 1000

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")]


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    method: Annotated[str, Field(min_length=1, max_length=20)]
    path: Annotated[str, Field(min_length=1, max_length=2000)]
    cast: bool = False

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        try:
            return parse_method(value)
        except InvalidRoute as exc:
            raise ValueError(str(exc)) from None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        try:
            parse_pattern(value)
        except InvalidRoute as exc:
            raise ValueError(str(exc)) from None
        return value


class RegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    service: Name
    instance: Name
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    routes: Annotated[list[RouteIn], Field(min_length=1, max_length=MAX_ROUTES)]
    topology: Name = "default"
    ttl: Annotated[int, Field(ge=MIN_TTL, le=MAX_TTL)] = 10

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return canonical_url(value)  # an InvalidInstanceURL is a ValueError
