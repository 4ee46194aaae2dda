"""Which handler a request goes to: route patterns, the compiled matcher, the route
table and topologies.  Knows no HTTP server, no relay and no leader.

``patterns`` (``/items/{id:int}`` parsed and checked), ``matcher`` (the compiled
segment trie), ``table`` (``RouteTable``: registrations, published in one assignment),
``topology`` (which table a request is looked up in).
"""
