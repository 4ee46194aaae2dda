"""The ``coyote`` command.

    coyote leader --port 8000                      # a standalone leader (registration API on)
    coyote serve-client sample_apps.deadwood.saloon:Saloon \\
        --leader http://127.0.0.1:8000 --port 9001  # a client as its own service
    coyote routes --leader http://127.0.0.1:8000   # the leader's route table

The token comes from ``--token`` or, better (it stays out of ``ps``), ``COYOTE_TOKEN``.
Like uvicorn, ``--app-dir`` (default: the current directory) is put on ``sys.path``
so ``module:Class`` resolves from where you stand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    token = args.token or os.environ.get("COYOTE_TOKEN")
    if not token:
        parser.error("a token is required: --token or the COYOTE_TOKEN variable")
    return str(token)


# Coyote(...) settings for remote instances, each a flag of the same name (see health.py)
_UPSTREAM: dict[str, tuple[type, str]] = {
    "max_response_head": (int, "bytes an instance's response head may take (60 KiB)"),
    "response_timeout": (float, "seconds a whole response may take (300; 0: no limit)"),
    "stream_idle_timeout": (float, "seconds a response body may pause (default: 30)"),
    "eject_after": (int, "failures in a row that eject an instance (3)"),
    "base_ejection_time": (float, "seconds of a first ejection, x ejections (10)"),
    "max_ejection_time": (float, "the longest ejection, seconds (300)"),
    "max_ejection_percent": (int, "most of a route's instances gateway failures eject (50)"),
}


def _upstream_flags(parser: argparse.ArgumentParser) -> None:
    for name, (kind, text) in _UPSTREAM.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help=text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coyote", description="coyote_mw: dynamic routing.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    sub = parser.add_subparsers(dest="command", required=True)

    leader = sub.add_parser("leader", help="run a standalone leader with the registration API")
    leader.add_argument("--host", default="127.0.0.1")
    leader.add_argument("--port", type=int, default=8000)
    leader.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    leader.add_argument("--prefix", default="/_coyote")
    leader.add_argument("--store", help="Redis URL shared by several leaders ($COYOTE_STORE)")
    leader.add_argument(
        "--ca-file", help="CA bundle (PEM) for https:// instances (default: the system's)"
    )
    _upstream_flags(leader)

    client = sub.add_parser("serve-client", help="serve a Client and register it with leaders")
    client.add_argument("target", help="the Client class, as module:Class")
    client.add_argument("--leader", action="append", required=True, help="a leader URL (repeat)")
    client.add_argument("--host", default="127.0.0.1")
    client.add_argument("--port", type=int, default=9001)
    client.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    client.add_argument("--topology", default="default")
    client.add_argument("--ttl", type=int, default=10, help="lease seconds (1-3600)")
    client.add_argument("--instance", help="instance name (default: host:port)")
    client.add_argument("--advertise", help="URL leaders use to reach it (default: host:port)")
    client.add_argument("--app-dir", default=".", help="put this folder on sys.path")
    client.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    client.add_argument("--ssl-keyfile", help="... and this private key (PEM)")
    client.add_argument("--ca-file", help="CA bundle (PEM) for https:// leaders")

    routes = sub.add_parser("routes", help="print a leader's route table")
    routes.add_argument("--leader", required=True)
    routes.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    routes.add_argument("--prefix", default="/_coyote")

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per heartbeat
    if args.command == "leader":
        import uvicorn

        from coyote_mw.leader import Coyote

        try:
            coyote = Coyote(
                token=_token(args, leader),
                prefix=args.prefix,
                store=args.store,
                tls=args.ca_file,
                **{k: getattr(args, k) for k in _UPSTREAM if getattr(args, k) is not None},
            )
        except ValueError as exc:
            leader.error(str(exc))
        app = coyote.asgi()
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    if args.command == "serve-client":
        from coyote_mw.client import Client
        from coyote_mw.loading import import_string
        from coyote_mw.remote_client import serve_client

        sys.path.insert(0, os.path.abspath(args.app_dir))
        try:
            target = import_string(args.target)
        except ValueError as exc:
            client.error(str(exc))
        instance = target() if isinstance(target, type) else target
        if not isinstance(instance, Client):
            client.error(f"{args.target} is not a coyote_mw.Client")
        if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
            client.error("--ssl-certfile and --ssl-keyfile go together")
        serve_client(
            instance,
            leaders=args.leader,
            token=_token(args, client),
            host=args.host,
            port=args.port,
            topology=args.topology,
            ttl=args.ttl,
            instance=args.instance,
            advertise=args.advertise,
            log_level=args.log_level,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            ca_file=args.ca_file,
        )
        return 0
    import httpx

    r = httpx.get(
        f"{args.leader.rstrip('/')}{args.prefix}/routes",
        headers={"authorization": f"Bearer {_token(args, routes)}"},
    )
    if r.status_code != 200:
        print(f"{r.status_code}: {r.text}", file=sys.stderr)
        return 1
    print(json.dumps(r.json(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
