"""Relaying to remote instances over HTTP.

``handler`` (``RemoteHandler``: HTTP and WebSocket forwarding to an instance),
``transport`` (the lean pooled HTTP/1.1 client on asyncio and httptools), ``health``
(outlier ejection and re-admission, the limits on what an instance may send),
``upstreams`` (what every remote handler is given of its leader: the policy, the
forwarding rules, TLS, the pools).
"""
