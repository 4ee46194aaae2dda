"""What an operator asks a leader, under its prefix: health, readiness, the table's
view and its metrics.

``api`` (``OperatorAPI``: owns the prefix, serves the views listed in ``VIEWS``, hands
``/registrations...`` to the registration API it wraps; a view is one entry there),
``base`` (what a view is given), ``views`` (``/health``, ``/ready``, ``/routes``),
``dashboard`` (``/dashboard``, the page for people), ``metrics`` (``/metrics``,
Prometheus).
"""
