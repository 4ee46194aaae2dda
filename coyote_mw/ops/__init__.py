"""What an operator asks a leader: health, readiness and the table's view.

``views`` (``/health``, ``/ready``, ``/routes``).
"""
