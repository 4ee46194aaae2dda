"""`make demo`: the Deadwood Saloon served through coyote in front of a Starlette host.

    python -m sample_apps.demo --port 8000

``GET /``, ``/drinks``, ``/drinks/{id:int}`` and ``/tab`` are the Saloon (a coyote
client, in the embedded in-memory table); ``GET /host`` is the host app's own route;
anything else falls through to the host, and ``/table`` (a host route) lists the table.  The port is
bound before the banner is printed: a busy port is one line and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import socket

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from coyote_mw import Coyote
from sample_apps.deadwood.saloon import Saloon


def build() -> tuple[Coyote, object]:
    coyote = Coyote()
    coyote.register(Saloon())

    async def host_home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("This route belongs to the Starlette host app.\n")

    async def routes(request: Request) -> JSONResponse:
        return JSONResponse(coyote.table.routes())

    host = Starlette(routes=[Route("/host", host_home), Route("/table", routes)])
    return coyote, coyote.asgi(host)


coyote, app = build()


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket before saying anything: a busy port is one line, no banner."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"demo: cannot listen on {host}:{port}: {exc.strerror or exc} "
            f"(another port: PORT={port + 1} make demo)"
        ) from None
    return sock


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    sock = listen(args.host, args.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base = f"http://{args.host}:{args.port}"
    print(
        f"\nThe Deadwood Saloon is open.\n"
        f"  {base}/                 the story of the Clever Coyote (a coyote client)\n"
        f"  {base}/drinks           the menu\n"
        f"  {base}/drinks/3         a drink (a route with an int parameter)\n"
        f"  {base}/host             the host app's own route\n"
        f"  {base}/table            the route table as JSON (a host route)\n"
        f"  {base}/no/such/route    falls through to the host app (its 404)\n"
        f"Ctrl-C to stop.\n",
        flush=True,
    )
    config = uvicorn.Config(
        app, host=args.host, port=args.port, access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
