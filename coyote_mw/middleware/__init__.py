"""The ASGI and WSGI middleware mounted in a host app.

``asgi`` / ``wsgi`` (the two middlewares), ``base`` (their shared options and
decision), ``gateway`` (what they are given of the leader), ``replay`` (the body a host
read, for ``precedence="host"``), ``accesslog`` (one line per request).
"""
