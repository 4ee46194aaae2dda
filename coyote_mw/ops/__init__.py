"""What an operator asks a leader, under its prefix: health, readiness, the table's
view, its metrics, and why a request goes where it goes.

``api`` (``OperatorAPI``: owns the prefix, serves the views listed in ``VIEWS``, hands
``/registrations...`` to the registration API it wraps; a view is one entry there),
``base`` (what a view is given), ``views`` (``/health``, ``/ready``, ``/routes``),
``explain`` (``/explain``: the verdict a request would get, and its JSON shape),
``dashboard`` (``/dashboard``, the page for people), ``metrics`` (``/metrics``,
Prometheus).
"""
