"""The README's five-minute tour as a file that runs (from the repository's root):

uvicorn sample_apps.deadwood.tour:app            # an ASGI server takes `app`
gunicorn sample_apps.deadwood.tour:wsgi_app      # a WSGI server takes `wsgi_app`
"""

from __future__ import annotations

from coyote_mw import Coyote
from sample_apps.deadwood.saloon import Saloon

coyote = Coyote()  # embedded, in-memory table
coyote.register(Saloon())  # topology "default"
app = coyote.asgi()  # ASGI, standalone; coyote.asgi(host_app) in front of your ASGI app
wsgi_app = coyote.wsgi()  # WSGI, standalone; coyote.wsgi(flask_app.wsgi_app) in front of yours
