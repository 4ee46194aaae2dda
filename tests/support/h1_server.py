"""``python -m tests.support.h1_server module:app PORT [option=value ...]``: an ASGI app
served by coyote's own HTTP/1.1 server (coyote_mw.server) on 127.0.0.1:PORT; each
``option=value`` is one of ``coyote_mw.server.Options`` (a number, or text), or
``shortcut=module:name``, a callable giving the server's shortcut (``Server(shortcut=)``),
or ``tls=FOLDER``: serve HTTPS with the certificate ``tests.support.tls`` wrote there,
or ``sndbuf=BYTES``: the kernel's send buffer of every connection (``SO_SNDBUF``, set on
the listening socket, which accepted ones inherit)."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from pathlib import Path

from coyote_mw.server import Options, Server
from coyote_mw.settings import import_string


def _value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    app = import_string(argv[0])
    port = int(argv[1])
    given = {k: v for k, _, v in (a.partition("=") for a in argv[2:])}
    # shortcut=module:name: a callable that gives the server's shortcut
    made = given.pop("shortcut", None)
    shortcut = import_string(made)() if made else None
    folder = given.pop("tls", None)
    sndbuf = given.pop("sndbuf", None)
    context = None
    if folder is not None:  # as coyote_mw.cli makes it for --ssl-certfile/--ssl-keyfile
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(Path(folder) / "chain.pem", Path(folder) / "key.pem")
    options = Options(**{k: _value(v) for k, v in given.items()})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(sndbuf))
    sock.bind(("127.0.0.1", port))
    return Server(app, options, ssl=context, shortcut=shortcut).run([sock])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
