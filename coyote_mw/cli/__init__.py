"""The ``coyote`` command: ``coyote leader``, ``serve-client``, ``routes``, ``explain``.

``main`` is the console script (``coyote_mw.cli:main``) and ``python -m coyote_mw``;
``table`` prints ``coyote routes``, ``explain`` prints ``coyote explain``.
"""

from coyote_mw.cli.main import main

__all__ = ["main"]
