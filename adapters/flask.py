"""Flask: coyote as an extension wrapping ``app.wsgi_app``.

    from coyote_mw.adapters.flask import Coyote

    coyote = Coyote(app)                 # or Coyote() and, in a factory, init_app(app)
    coyote.register(Saloon())

``Coyote`` here is ``coyote_mw.Coyote`` with ``init_app``; it reads these keys of
``app.config`` (every one optional): the adapter's own four, then ``COYOTE_`` and each
keyword of ``coyote_mw.Coyote`` in upper case (its docstring says more of each):

=======================  ==========  ================================================
COYOTE_CLIENTS           []          clients to register, as "module:Class" strings
COYOTE_MOUNT             ""          a prefix coyote owns ("": the whole path space)
COYOTE_TOPOLOGY          "default"   the topology this app serves
COYOTE_PRECEDENCE        "coyote"    "coyote": matched requests go to coyote first;
                                     "host": to the Flask routes first, coyote after
                                     a 404
COYOTE_CONCURRENCY       50          relay slots
COYOTE_QUEUE             100         relay queue
COYOTE_TIMEOUT           30.0        seconds a handler may take
COYOTE_TOPOLOGIES        None        bounds of their own for some topologies:
                                     {"blue": {"concurrency": 10, "queue": 20}}
COYOTE_MAX_BODY          10 MiB      bytes a handler may read
COYOTE_ACCESS_LOG        True        one line per coyote request on ``coyote_mw.access``
COYOTE_LOG_FORMAT        None        None: logging is Flask's; "text" / "json": coyote's
                                     loggers print to stderr in that format
COYOTE_TOKEN             None        bearer token of the registration API (off while
                                     None)
COYOTE_PREFIX            "/_coyote"  where the registration API lives
COYOTE_STORE             None        Redis URL shared by every worker (None: the table
                                     lives in this process)
COYOTE_TLS               None        how https:// instances are verified: an
                                     ``ssl.SSLContext`` or a CA bundle's path
COYOTE_TRUSTED_PROXIES   None        proxies whose X-Forwarded-* are kept (IPs / CIDRs)
COYOTE_MAX_HEADERS       100         request header lines (431 above)
COYOTE_MAX_HEADER_BYTES  32 KiB      bytes of request headers (431 above)
COYOTE_MAX_TARGET        8 KiB       bytes of the request target (414 above)
COYOTE_PSEUDONYM         random      this leader's name in Via (loops: 508)
COYOTE_MAX_WEBSOCKETS    1000        relayed WebSockets open at once (under ASGI)
COYOTE_METRICS           "token"     Prometheus metrics at the prefix's /metrics:
                                     "token", "open" (no token) or "off"
=======================  ==========  ================================================

and, for remote instances, ``COYOTE_MAX_RESPONSE_HEAD``, ``COYOTE_RESPONSE_TIMEOUT``,
``COYOTE_STREAM_IDLE_TIMEOUT``, ``COYOTE_EJECT_AFTER``, ``COYOTE_BASE_EJECTION_TIME``,
``COYOTE_MAX_EJECTION_TIME``, ``COYOTE_MAX_EJECTION_PERCENT`` (``coyote_mw.Coyote``'s).
Any other ``COYOTE_*`` key is refused (``UnknownSetting``, a ``ValueError`` naming the
closest known key): a typo is not silently ignored.

With the default precedence a route registered in coyote shadows a Flask route of
the same path; unmatched requests always reach Flask untouched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coyote_mw.leader import Coyote as _Coyote
from coyote_mw.settings import apply_settings, check_settings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["Coyote"]


class Coyote(_Coyote):
    def __init__(self, app: Flask | None = None, **settings: Any) -> None:
        super().__init__(**settings)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        cfg = app.config
        check_settings((k[7:] for k in cfg if k.startswith("COYOTE_")), "COYOTE_{}")
        topology = apply_settings(self, lambda key: cfg.get("COYOTE_" + key))
        app.wsgi_app = self.wsgi(  # type: ignore[method-assign]
            app.wsgi_app,
            mount=cfg.get("COYOTE_MOUNT", ""),
            topology=topology,
            precedence=cfg.get("COYOTE_PRECEDENCE", "coyote"),
        )
        app.extensions["coyote"] = self
