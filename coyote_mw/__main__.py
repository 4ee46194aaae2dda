"""``python -m coyote_mw``: the ``coyote`` command."""

from coyote_mw.cli import main

raise SystemExit(main())
