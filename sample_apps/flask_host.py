"""A Flask host with one route of its own and the Deadwood Saloon mounted through coyote.

flask --app sample_apps.flask_host run --port 8000
gunicorn sample_apps.flask_host:app
"""

from __future__ import annotations

from coyote_mw.adapters.flask import Coyote
from flask import Flask


def create_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update({"COYOTE_CLIENTS": ["sample_apps.deadwood.saloon:Saloon"], **config})

    @app.get("/host")
    def host() -> str:
        return "This route belongs to the Flask host app.\n"

    Coyote(app)
    return app


app = create_app()
