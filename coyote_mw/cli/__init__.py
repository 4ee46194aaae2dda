"""The ``coyote`` command: ``coyote leader``, ``coyote serve-client``, ``coyote routes``.

``main`` is the console script (``coyote_mw.cli:main``) and ``python -m coyote_mw``.
"""

from coyote_mw.cli.main import main

__all__ = ["main"]
