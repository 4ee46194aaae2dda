"""The ``coyote`` command.

    coyote leader --port 8000                      # a standalone leader (registration API on)
    coyote leader --workers 4 --store redis://127.0.0.1:6379/0  # 4 processes, one port
    coyote serve-client sample_apps.deadwood.saloon:Saloon \\
        --leader http://127.0.0.1:8000 --port 9001  # a client as its own service
    coyote routes --leader http://127.0.0.1:8000   # the leader's route table
    coyote explain GET /drinks/ --leader http://127.0.0.1:8000  # what a request would get

The token comes from ``--token`` or, better (it stays out of ``ps``), ``COYOTE_TOKEN``.
Like uvicorn, ``--app-dir`` (default: the current directory) is put on ``sys.path``
so ``module:Class`` resolves from where you stand.

Bad input is one line on stderr and a non-zero exit, never a traceback: exit 2 for
what the command line says (a bad URL, import path or file), exit 1 for what happened
(a leader that is down or refuses a registration for good).
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from coyote_mw.cli.explain import print_explanation
from coyote_mw.cli.table import print_routes
from coyote_mw.logs import FORMATS, configure_cli
from coyote_mw.workers import MAX_WORKERS

__all__ = ["main"]

_LOG_FORMAT = "text lines, or one JSON object per line (also after the command)"


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.HelpFormatter):
    """Each option's default in ``--help``, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if isinstance(action, argparse.BooleanOptionalAction):
            # (some Pythons add "(default: True)" themselves: on/off reads better)
            text = text.replace(" (default: %(default)s)", "")
            return f"{text} (default: {'on' if default else 'off'})"
        worth_saying = not (
            default is None or default is False or default == [] or default is argparse.SUPPRESS
        )
        if action.option_strings and worth_saying and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coyote-mw")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _url(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        from coyote_mw.registry.registrar import check_url

        try:
            return check_url(value, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _ca_file(value: str) -> str:
    """A CA bundle that ssl can load: refused here, not in a traceback later."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a file (a CA bundle, PEM)")
    try:
        ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError) as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a CA bundle (PEM): {exc}") from None
    return value


def _target(value: str) -> str:
    if not value.startswith("/"):
        raise argparse.ArgumentTypeError(f"{value!r}: a path starts with '/', e.g. /drinks/3")
    return value


def _header(value: str) -> str:
    name, colon, _ = value.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"{value!r}: use NAME:VALUE, e.g. X-Coyote-Topology:blue")
    return value


def _check_tls_serving(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--ssl-certfile and --ssl-keyfile: both or neither, and a pair that loads."""
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        parser.error("--ssl-certfile and --ssl-keyfile go together")
    if args.ssl_certfile is not None:
        bad = _check_certificate(args.ssl_certfile, args.ssl_keyfile)
        if bad:
            parser.error(bad)


def _check_certificate(certfile: str, keyfile: str) -> str | None:
    """What is wrong with a certificate and its key (unreadable, not PEM, not a pair)."""
    for path in (certfile, keyfile):
        if not os.path.isfile(path) or not os.access(path, os.R_OK):
            return f"{path!r} is not a readable file (--ssl-certfile / --ssl-keyfile)"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        return f"--ssl-certfile {certfile!r} / --ssl-keyfile {keyfile!r}: {exc}"
    return None


def _listen(host: str, port: int, command: str, scheme: str = "http") -> socket.socket:
    """Bind the port before serving: a busy port or a bad host is one line and exit 1.

    (uvicorn given a bound socket does not say where it listens: this says it.)
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise SystemExit(
            f"coyote {command}: error: cannot listen on {host}:{port}: {exc}"
        ) from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or exc
        raise SystemExit(
            f"coyote {command}: error: cannot listen on {host}:{port}: {why}"
        ) from None
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("coyote_mw").info(
        "coyote %s on %s://%s:%d (Ctrl-C to stop)", command, scheme, shown, port
    )
    return sock


def _uvicorn(parser: argparse.ArgumentParser) -> Any:
    try:
        import uvicorn
    except ImportError:
        parser.error("this command runs on uvicorn: pip install 'coyote-mw[server]'")
    return uvicorn


def _serve_coyote(
    coyote: Any,
    sock: socket.socket,
    args: argparse.Namespace,
    ready: Callable[[], None] | None = None,
) -> int:
    """``coyote leader --http coyote``: the leader on coyote's own HTTP/1.1 server, its
    head bounds those of the leader's forwarding policy; ``ready()`` once it serves."""
    from coyote_mw.server import Options, Server

    app = coyote.asgi()
    # requests relayed without ASGI, unless uvicorn's middleware must see each scope
    shortcut = None if args.proxy_headers else app.direct()
    if args.proxy_headers:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app = ProxyHeadersMiddleware(app, trusted_hosts=args.trusted_proxy)
    context = None
    if args.ssl_certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    fw = coyote.forwarding
    options = Options(
        max_target=fw.max_target,
        max_headers=fw.max_headers,
        # the target, the names and values, and each line's ": " and CRLF
        max_head_bytes=max(64 * 1024, fw.max_target + fw.max_header_bytes + 8 * fw.max_headers),
        lifespan="on",
        shutdown_timeout=args.graceful_timeout,
    )
    return Server(app, options, ssl=context, ready=ready, shortcut=shortcut).run([sock])


def _token(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    token = args.token or os.environ.get("COYOTE_TOKEN")
    if not token:
        parser.error("a token is required: --token or the COYOTE_TOKEN variable")
    return str(token)


def _parse_topology_bounds(specs: list[str]) -> dict[str, dict[str, float]]:
    """``["blue:concurrency=10,queue=20"]`` -> ``{"blue": {"concurrency": 10, "queue": 20}}``."""
    out: dict[str, dict[str, float]] = {}
    for spec in specs:
        name, sep, pairs = spec.partition(":")
        if not sep or not name or not pairs:
            raise ValueError(f"--topology-bounds {spec!r}: use NAME:concurrency=10,queue=20")
        bounds = out.setdefault(name, {})
        for pair in pairs.split(","):
            key, eq, value = pair.partition("=")
            try:
                bounds[key] = float(value) if key == "timeout" else int(value)
            except ValueError:
                raise ValueError(
                    f"--topology-bounds {spec!r}: {pair!r} is not KEY=NUMBER"
                ) from None
            if not eq:
                raise ValueError(f"--topology-bounds {spec!r}: {pair!r} is not KEY=NUMBER")
    return out


# Coyote(...) settings for remote instances, each a flag of the same name
# (coyote_mw.remote.health)
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


_LOG_LEVELS = ["debug", "info", "warning"]


def _parsers() -> tuple[_Parser, dict[str, _Parser]]:
    """The ``coyote`` parser and its subcommands' parsers, by name."""
    parser = _Parser(
        prog="coyote", description="coyote_mw: dynamic routing.", formatter_class=_Help
    )
    parser.add_argument("--version", action="version", version=f"coyote-mw {_version()}")
    parser.add_argument("--log-level", default="info", choices=_LOG_LEVELS, help="how much to log")
    parser.add_argument("--log-format", default="text", choices=FORMATS, help=_LOG_FORMAT)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> _Parser:
        p: _Parser = sub.add_parser(name, help=text, formatter_class=_Help)
        # also after the subcommand (coyote leader --log-level debug); SUPPRESS: not
        # given here, the one before the subcommand (or its default) stands
        p.add_argument(
            "--log-level",
            default=argparse.SUPPRESS,
            choices=_LOG_LEVELS,
            help="as before the subcommand (default: info)",
        )
        return p

    leader = command("leader", "run a standalone leader with the registration API")
    leader.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file with any of these options, a key each (max_body = 1048576); "
        "flags given here win over it",
    )
    leader.add_argument("--host", default="127.0.0.1", help="address to listen on")
    leader.add_argument("--port", type=int, default=8000, help="port to listen on")
    leader.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    leader.add_argument("--prefix", default="/_coyote", help="where the API lives")
    leader.add_argument("--store", help="Redis URL shared by several leaders ($COYOTE_STORE)")
    leader.add_argument(
        "--ca-file",
        type=_ca_file,
        help="CA bundle (PEM) for https:// instances (default: the system's)",
    )
    leader.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="ADDR",
        help="a proxy (IP or CIDR) whose X-Forwarded-*/Forwarded headers are kept (repeat)",
    )
    leader.add_argument(
        "--proxy-headers",
        action="store_true",
        help="let uvicorn take the client address and scheme from X-Forwarded-For/-Proto "
        "of the --trusted-proxy peers (default: off)",
    )
    leader.add_argument("--concurrency", type=int, default=50, help="relay slots per topology")
    leader.add_argument("--queue", type=int, default=100, help="relay queue per topology")
    leader.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a request may take (504)"
    )
    leader.add_argument(
        "--max-body",
        type=int,
        default=10 * 1024 * 1024,
        help="bytes a handler may read from a request body (413 above)",
    )
    leader.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per request on the coyote_mw.access logger",
    )
    leader.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    leader.add_argument("--ssl-keyfile", help="... and this private key (PEM)")
    leader.add_argument(
        "--http",
        choices=["uvicorn", "coyote"],
        default="uvicorn",
        help="the HTTP server: uvicorn, or coyote's own HTTP/1.1 server (coyote_mw.server)",
    )
    leader.add_argument(
        "--max-websockets",
        type=int,
        default=1000,
        help="relayed WebSockets open at once; more are refused",
    )
    leader.add_argument(
        "--topology-bounds",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="bounds of one topology, e.g. blue:concurrency=10,queue=20,timeout=5 (repeat)",
    )
    leader.add_argument(
        "--metrics",
        choices=["token", "open", "off"],
        default="token",
        help="Prometheus metrics at PREFIX/metrics: behind the token, open to anyone, or off",
    )
    leader.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"worker processes serving the port, 1 to {MAX_WORKERS} (default: $COYOTE_WORKERS "
        "or 1); more than 1 needs --store, and --concurrency, --queue, --max-websockets "
        "and instance ejection are then per worker",
    )
    leader.add_argument(
        "--graceful-timeout",
        type=int,
        default=30,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long requests in flight may take to finish",
    )
    _upstream_flags(leader)
    leader.add_argument("--log-format", choices=FORMATS, default=argparse.SUPPRESS)

    client = command("serve-client", "serve a Client and register it with leaders")
    client.add_argument("target", help="the Client class, as module:Class")
    client.add_argument(
        "--leader",
        action="append",
        required=True,
        type=_url("leader"),
        help="a leader URL (repeat)",
    )
    client.add_argument("--host", default="127.0.0.1", help="address to listen on")
    client.add_argument("--port", type=int, default=9001, help="port to listen on")
    client.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    client.add_argument("--topology", default="default", help="the topology it serves")
    client.add_argument("--ttl", type=int, default=10, help="lease seconds (1-3600)")
    client.add_argument("--instance", help="instance name (default: host:port)")
    client.add_argument(
        "--advertise",
        type=_url("--advertise"),
        help="URL leaders use to reach it (default: host:port)",
    )
    client.add_argument("--app-dir", default=".", help="put this folder on sys.path")
    client.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    client.add_argument("--ssl-keyfile", help="... and this private key (PEM)")
    client.add_argument("--ca-file", type=_ca_file, help="CA bundle (PEM) for https:// leaders")
    client.add_argument("--log-format", choices=FORMATS, default=argparse.SUPPRESS)

    routes = command("routes", "print a leader's route table (a table, or --json)")
    routes.add_argument("--leader", required=True, type=_url("leader"), help="the leader's URL")
    routes.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    routes.add_argument("--prefix", default="/_coyote", help="where the leader's API lives")
    routes.add_argument("--ca-file", type=_ca_file, help="CA bundle (PEM) for an https:// leader")
    routes.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    routes.add_argument("--json", action="store_true", help="print the JSON the leader sends")

    explain = command("explain", "what a leader would do with a request, without sending it")
    explain.add_argument("method", help="the request's method, e.g. GET")
    explain.add_argument("path", type=_target, help="its path (and query), e.g. /drinks/3")
    explain.add_argument("--leader", required=True, type=_url("leader"), help="the leader's URL")
    explain.add_argument("--token", help="bearer token (default: $COYOTE_TOKEN)")
    explain.add_argument("--prefix", default="/_coyote", help="where the leader's API lives")
    explain.add_argument(
        "--topology", help="look it up in this topology (default: as the leader would choose)"
    )
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        type=_header,
        metavar="NAME:VALUE",
        help="a header of the request, for a topology chosen by header (repeat)",
    )
    explain.add_argument("--ca-file", type=_ca_file, help="CA bundle (PEM) for an https:// leader")
    explain.add_argument("--timeout", type=float, default=10.0, help="seconds to wait")
    explain.add_argument("--json", action="store_true", help="print the JSON the leader sends")
    commands = {"leader": leader, "serve-client": client, "routes": routes, "explain": explain}
    return parser, commands


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, with ``coyote leader --config FILE`` read in: an option given
    on the command line wins over the file, the file over the defaults."""
    parser, commands = _parsers()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command == "leader" and args.config is not None:
        leader = commands["leader"]
        settings = _read_config(args.config, leader)
        given = _given(parser, argv)
        for key, value in settings.items():
            if key not in given:
                setattr(args, key, value)
    return args


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The options the command line itself sets (parsed again with no defaults)."""
    actions = [
        a
        for p in _all_parsers(parser)
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
    ]
    saved = [a.default for a in actions]
    try:
        for a in actions:
            a.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv))) - {"command"}
    finally:
        for a, default in zip(actions, saved, strict=True):
            a.default = default


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [parser]
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            out.extend(a.choices.values())
    return out


def _read_config(path: str, leader: argparse.ArgumentParser) -> dict[str, Any]:
    """``coyote leader``'s options from a TOML file, each checked as its flag would be;
    anything wrong is one line and exit 2."""
    import tomllib

    where = f"--config {path!r}"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        leader.error(f"{where}: {exc.strerror or exc}")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        leader.error(f"{where} is not TOML: {exc}")
    options = {
        a.dest: a for a in leader._actions if a.option_strings and a.dest not in ("help", "config")
    }
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        action = options.get(key)
        if action is None:
            close = difflib.get_close_matches(key, list(options), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            leader.error(f"{where}: unknown key {raw_key!r}{hint}")
        try:
            out[key] = _setting(action, value)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            leader.error(f"{where}: {raw_key} = {value!r}: {exc}")
    return out


def _setting(action: argparse.Action, value: Any) -> Any:
    """A TOML value for an option, checked and converted as the flag's value would be."""
    if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise TypeError("must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise TypeError("must be a string or a list of strings")
        return [_one(action, x) for x in items]
    return _one(action, value)


def _one(action: argparse.Action, value: Any) -> Any:
    kind = action.type
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("must be a whole number")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("must be a number")
        value = float(value)
    elif not isinstance(value, str):
        raise TypeError("must be a string")
    elif callable(kind):
        value = kind(value)
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"must be one of {', '.join(map(str, action.choices))}")
    return value


def _workers(args: argparse.Namespace, leader: argparse.ArgumentParser) -> int:
    """--workers (or its TOML key), else $COYOTE_WORKERS, else 1; from 1 to MAX_WORKERS."""
    workers, said = args.workers, f"--workers {args.workers}"
    if workers is None:
        env = os.environ.get("COYOTE_WORKERS", "").strip()
        try:
            workers = int(env) if env else 1
        except ValueError:
            leader.error(f"COYOTE_WORKERS={env!r} is not a whole number")
        said = f"COYOTE_WORKERS={env}"
    if not 1 <= workers <= MAX_WORKERS:
        leader.error(f"{said}: use 1 to {MAX_WORKERS} worker processes")
    return int(workers)


def _leader(args: argparse.Namespace, leader: argparse.ArgumentParser) -> int:
    """``coyote leader``: one process, or a supervisor and ``--workers`` forks of it."""
    import importlib.util

    workers = _workers(args, leader)
    if args.graceful_timeout < 0:
        leader.error(f"--graceful-timeout {args.graceful_timeout}: seconds, 0 or more")
    if args.proxy_headers and not args.trusted_proxy:
        leader.error("--proxy-headers needs --trusted-proxy: whose headers to believe")
    _check_tls_serving(leader, args)
    token = _token(args, leader)
    scheme = "https" if args.ssl_certfile else "http"
    if workers == 1:
        if args.http == "uvicorn":
            _uvicorn(leader)
        coyote = _coyote(args, leader, token)
        sock = _listen(args.host, args.port, "leader", scheme)
        _serve_leader(args, leader, coyote, sock)
        return 0

    from coyote_mw.workers import Supervisor

    if not (args.store or os.environ.get("COYOTE_STORE")):
        leader.error(
            f"--workers {workers} needs --store redis://... (or $COYOTE_STORE): each worker "
            "would keep its own table, and a registration would reach one worker only"
        )
    if args.http == "uvicorn" and importlib.util.find_spec("uvicorn") is None:  # not imported
        leader.error("this command runs on uvicorn: pip install 'coyote-mw[server]'")
    configure_cli(args.log_level, args.log_format, pid=True)  # whose line is whose
    # one socket, bound here and inherited by every worker (not SO_REUSEPORT: README)
    sock = _listen(args.host, args.port, "leader", scheme)

    def serve(ready: Callable[[], None]) -> int:
        # in a worker, after the fork: everything a leader holds is its own
        coyote = _coyote(args, leader, token)
        return _serve_leader(args, leader, coyote, sock, ready)

    metrics = args.metrics != "off" and importlib.util.find_spec("prometheus_client") is not None
    supervisor = Supervisor(
        workers, serve, graceful_timeout=args.graceful_timeout, metrics_dir=metrics
    )
    code = supervisor.run()
    sock.close()
    return code


def _coyote(args: argparse.Namespace, leader: argparse.ArgumentParser, token: str) -> Any:
    """The leader the command line describes; a bad setting is one line and exit 2."""
    from coyote_mw.leader import Coyote

    try:
        return Coyote(
            token=token,
            prefix=args.prefix,
            store=args.store,
            tls=args.ca_file,
            trusted_proxies=args.trusted_proxy,
            concurrency=args.concurrency,
            queue=args.queue,
            timeout=args.timeout,
            max_websockets=args.max_websockets,
            max_body=args.max_body,
            access_log=args.access_log,
            topologies=_parse_topology_bounds(args.topology_bounds),
            metrics=args.metrics,
            **{k: getattr(args, k) for k in _UPSTREAM if getattr(args, k) is not None},
        )
    except (ValueError, TypeError, OSError, ssl.SSLError) as exc:
        leader.error(str(exc))


def _serve_leader(
    args: argparse.Namespace,
    leader: argparse.ArgumentParser,
    coyote: Any,
    sock: socket.socket,
    ready: Callable[[], None] | None = None,
) -> int:
    """Serve ``coyote`` on ``sock`` with uvicorn (or coyote's own server: ``--http
    coyote``) until SIGTERM/SIGINT; ``ready()`` once it accepts connections.  3 (as
    uvicorn's own) when it never started."""
    if args.http == "coyote":
        return _serve_coyote(coyote, sock, args, ready)
    _uvicorn(leader)
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and ready is not None:
                ready()

    # uvicorn's own proxy_headers (on by default) would take any loopback client's
    # X-Forwarded-For as its address: only with the flag, only from trusted proxies
    config = uvicorn.Config(
        coyote.asgi(),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # coyote's access line is the one (coyote_mw.middleware.accesslog), and uvicorn's own
        # lines go through the handler configure_cli set, in the same format
        access_log=False,
        log_config=None,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.trusted_proxy if args.proxy_headers else None,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    server = Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 3


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    _, commands = _parsers()
    leader, client = commands["leader"], commands["serve-client"]
    configure_cli(args.log_level, args.log_format)
    if args.command == "leader":
        return _leader(args, leader)
    if args.command == "serve-client":
        # each command imports what it runs: `coyote --version` or `coyote routes` never
        # load the web stack, httpx or redis
        from coyote_mw.client import Client
        from coyote_mw.registry.registrar import RegistrationRefused
        from coyote_mw.serving import serve_client
        from coyote_mw.settings import import_string

        _uvicorn(client)
        sys.path.insert(0, os.path.abspath(args.app_dir))
        try:
            target = import_string(args.target)
        except ValueError as exc:
            client.error(str(exc))
        except Exception as exc:  # the module's own code failed while importing
            client.error(f"importing {args.target} failed: {type(exc).__name__}: {exc}")
        try:
            instance = target() if isinstance(target, type) else target
        except Exception as exc:
            client.error(f"{args.target}() failed: {type(exc).__name__}: {exc}")
        if not isinstance(instance, Client):
            client.error(f"{args.target} is not a coyote_mw.Client")
        _check_tls_serving(client, args)
        scheme = "https" if args.ssl_certfile else "http"
        sock = _listen(args.host, args.port, "serve-client", scheme)
        try:
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
                sock=sock,
            )
        except RegistrationRefused as exc:
            print(f"coyote serve-client: error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "explain":
        params = [("method", args.method), ("path", args.path)]
        if args.topology:
            params.append(("topology", args.topology))
        params += [("header", header) for header in args.header]
        return _ask(args, commands["explain"], "/explain", params, print_explanation)
    return _ask(args, commands["routes"], "/routes", [], print_routes)


def _ask(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    endpoint: str,
    params: list[tuple[str, str]],
    show: Callable[[Any, TextIO], None],
) -> int:
    """GET one of the leader's operator views and print it (``show``, or ``--json``)."""
    import httpx

    url = f"{args.leader.rstrip('/')}{args.prefix}{endpoint}"
    token = _token(args, parser)

    def fail(why: str) -> int:
        print(f"coyote {args.command}: error: {url}: {why}", file=sys.stderr)
        return 1

    try:
        r = httpx.get(
            url,
            params=tuple(params),
            headers={"authorization": f"Bearer {token}"},
            timeout=args.timeout,
            verify=ssl.create_default_context(cafile=args.ca_file) if args.ca_file else True,
        )
    except httpx.HTTPError as exc:
        return fail(f"{type(exc).__name__}: {exc or 'no answer'}")
    if r.status_code != 200:
        return fail(f"answered {r.status_code}: {' '.join(r.text.split())[:300]}")
    try:
        data = r.json()
    except ValueError:
        return fail("answered 200 but not with JSON: is that a coyote leader (and --prefix)?")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    try:
        show(data, sys.stdout)
    except ValueError as exc:
        return fail(f"answered 200 but {exc}: is that a coyote leader (and --prefix)?")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
