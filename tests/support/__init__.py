"""What the tests share, one module per kind of thing; tests import from here, never
from each other.

Processes and servers:
    processes         free ports, ``running(argv)`` a server process, ``stop``, ``until``
    coyote_processes  ``coyote leader`` / ``serve-client`` processes (the ``procs`` fixture)
    servers           uvicorn and Werkzeug's server in threads of this process
    redis_server      a real redis-server (the ``redis_url`` fixture)
    tls               a throwaway CA and a 127.0.0.1 certificate
    hypercorn_cli     hypercorn's command line with ``--port`` (hypercorn on trio)

In this process:
    http_clients      httpx's sync API over coyote mounted as ASGI or WSGI
    registration      a leader with its registration API open (``leader``, ``api``)
    clients           coyote clients the tests register (``Trouble``)
    ledger            ``LedgerUpstream``: an instance that records the bytes it gets
    django_setup      Django, set up with the sample project's settings
    browser           Debian's chromium through Playwright (the dashboard's tests)

What server processes serve ("tests.support.<module>:<app>"):
    body_apps, matrix_apps, forwarding_apps, hostile_app, overload_app, relay_leader,
    remote_apps, trio_apps; Django settings django_bodies, django_bodies_host and the
    project django_site

``python -m tests.support.dashboard_screenshot`` makes docs/dashboard.png.
"""
