"""What an operator asks a leader: health, readiness, the table's view and its metrics.

``views`` (``/health``, ``/ready``, ``/routes``), ``dashboard`` (``/dashboard``),
``metrics`` (``/metrics``, Prometheus).
"""
