"""The HTTP vocabulary every layer shares, and no server of its own.

``request`` (what a handler receives), ``responses`` (what it returns, and the JSON
error bodies), ``paths`` (the canonical form of a request path), ``forwarding`` (what a
request head must look like to be dispatched, and which headers go on to an instance),
``urls`` (the canonical form of an instance URL), ``types`` (the ASGI and WSGI shapes:
``Scope``, ``Receive``, ``Send``, ``Environ``, ...).
"""
