"""coyote's own HTTP/1.1 server for ASGI 3 apps (http, websocket, lifespan).

    from coyote_mw.server import Options, Server
    Server(app, Options(keep_alive_timeout=5)).run([sock])   # sock: bound already

An ``asyncio.Protocol`` per connection (``h1``) on httptools' llhttp parser, strict as
it comes; WebSockets on the sans-I/O ``websockets`` protocol (``ws``); the listening,
the lifespan, the timers and the stop in ``run``; the options, status lines and the
server's own JSON answers in ``wire``. It is what ``coyote leader --http coyote`` runs.
"""

from coyote_mw.server.h1 import Exchange, H1Connection, Shortcut
from coyote_mw.server.run import Server
from coyote_mw.server.wire import Options

__all__ = ["Exchange", "H1Connection", "Options", "Server", "Shortcut"]
