"""coyote_mw: a dynamic-routing WSGI/ASGI middleware.

Clients register their routes at run time into a shared route table; a middleware
mounted in any host app looks every request up there and relays it, through bounded
concurrency and a bounded queue, to the matching handler.

As a library it adds only a ``NullHandler`` to the ``coyote_mw`` logger (the logging
HOWTO's advice): without a logging configuration of the host's, nothing is printed,
not even warnings through logging's bare last-resort handler.
"""

import logging

from coyote_mw.client import Client, route
from coyote_mw.errors import (
    BadRequest,
    BadRequestPath,
    CoyoteError,
    DispatchError,
    HandlerTimeout,
    InvalidRoute,
    MethodNotAllowed,
    NoHealthyInstance,
    NoMatchingRoute,
    PayloadTooLarge,
    RegistrationError,
    RelaySaturated,
    RouteConflict,
    RoutingError,
)
from coyote_mw.http.request import Request
from coyote_mw.http.responses import Response
from coyote_mw.leader import Coyote
from coyote_mw.routing.table import Match, Registration, Route, RouteTable, TableChange
from coyote_mw.routing.topology import by_header

__all__ = [
    "BadRequest",
    "BadRequestPath",
    "Client",
    "Coyote",
    "CoyoteError",
    "DispatchError",
    "HandlerTimeout",
    "InvalidRoute",
    "Match",
    "MethodNotAllowed",
    "NoHealthyInstance",
    "NoMatchingRoute",
    "PayloadTooLarge",
    "Registration",
    "RegistrationError",
    "RelaySaturated",
    "Request",
    "Response",
    "Route",
    "RouteConflict",
    "RouteTable",
    "RoutingError",
    "TableChange",
    "by_header",
    "route",
]

logging.getLogger("coyote_mw").addHandler(logging.NullHandler())
