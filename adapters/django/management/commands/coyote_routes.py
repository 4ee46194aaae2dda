"""``manage.py coyote_routes``: the route table of this process's leader."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ... import get_coyote


class Command(BaseCommand):
    help = "List coyote's route table (from settings.COYOTE and clients registered at start)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topology", help="only this topology")
        parser.add_argument("--json", action="store_true", help="print the table as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        routes = get_coyote().table.routes(options["topology"])
        if options["json"]:
            self.stdout.write(json.dumps(routes, indent=2))
            return
        if not routes:
            self.stdout.write("No routes.")
            return
        width = max(len(r["path"]) for r in routes)
        for r in routes:
            cast = "  (cast)" if r["cast"] else ""
            self.stdout.write(
                f"{r['topology']:<12} {r['method']:<7} {r['path']:<{width}}  "
                f"{r['service']} [{', '.join(r['instances'])}]{cast}"
            )
