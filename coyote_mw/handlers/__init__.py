"""What the relay runs for a matched route, behind one interface (``base.Handler``).

``base`` (the interface, a client's functions, writing responses), ``apps`` (whole
ASGI / WSGI apps in process), ``bridge`` (an ASGI app under a WSGI host),
``eventloop`` (serving clients' functions on trio).  Remote instances are
``coyote_mw.remote``.
"""
