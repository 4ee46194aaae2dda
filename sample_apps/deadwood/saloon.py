"""The Deadwood Saloon, the sample client: the README's five-minute tour shows this file."""

from __future__ import annotations

from collections import deque
from typing import Any

from coyote_mw import Client, Request, route
from sample_apps.deadwood.story import STORY

DRINKS = {1: "whiskey", 2: "sarsaparilla", 3: "coffee"}


class Saloon(Client):
    service = "deadwood.saloon"

    def __init__(self) -> None:
        self.orders: deque[Any] = deque(maxlen=100)  # the tab keeps the last 100 orders

    @route("GET", "/")
    def story(self, request: Request) -> str:
        return STORY  # the Clever Coyote (sample_apps/deadwood/story.py)

    @route("GET", "/drinks")
    def menu(self, request: Request) -> list[Any]:
        return [{"id": drink_id, "drink": drink} for drink_id, drink in DRINKS.items()]

    @route("GET", "/drinks/{id:int}")  # params arrive converted: an int
    async def drink(self, request: Request) -> Any:  # def or async def, both work anywhere
        drink_id = request.params["id"]
        if drink_id not in DRINKS:
            return 404, {"error": "No such drink", "id": drink_id}
        return {"id": drink_id, "drink": DRINKS[drink_id]}

    @route("POST", "/tab", cast=True)  # fire and forget: the caller gets 202 at once
    def order(self, request: Request) -> None:
        self.orders.append(request.json())  # runs on the relay after the 202

    @route("GET", "/tab")
    def tab(self, request: Request) -> list[Any]:
        return list(self.orders)
