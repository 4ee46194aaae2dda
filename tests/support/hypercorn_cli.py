"""``python tests/support/hypercorn_cli.py [hypercorn options] module:app --port N``:
hypercorn's own command line, with ``--port`` as ``tests.support.processes.running``
passes it."""

import sys

from hypercorn.__main__ import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--port" in argv:
        at = argv.index("--port")
        argv[at : at + 2] = ["--bind", f"127.0.0.1:{argv[at + 1]}"]
    sys.exit(main(argv))
