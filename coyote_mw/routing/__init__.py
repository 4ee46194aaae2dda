"""Which handler a request goes to: route patterns, the compiled matcher, the route
table, topologies, and the decision.  Knows no HTTP server, no relay and no leader.

``patterns`` (``/items/{id:int}`` parsed and checked), ``matcher`` (the compiled
segment trie and its lookup), ``builder`` (a snapshot's next one, copying only what a
change touches), ``endpoint`` (what a lookup finds: ``Endpoint``, ``Match``), ``table``
(``RouteTable``: registrations, published in one assignment),
``topology`` (which table a request is looked up in), ``decision`` (what becomes of a
request: dispatch, the host's, the operator API's, or 404 / 405 / 414 - for ASGI, WSGI
and ``Coyote.call`` alike), ``near`` (the routes a missed path nearly fits).
"""
