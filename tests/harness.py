"""A live service for tests: the real app under uvicorn in a background thread, with the
embedded graph database it starts itself, reached over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import uvicorn

from app import create_app
from graph_db.embedded import find_free_port
from resolvers.context import Services
from settings import Settings
from transport.tls import serving_options
from transport.uvicorn_adapter import uvicorn_ws_options

T = TypeVar("T")


class LiveServer:
    def __init__(self, settings: Settings, ws_options: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.port = find_free_port()
        self.app = create_app(settings)
        # By default the WebSocket settings `make run` uses (app.main), so tests see its
        # fast path.
        options = (uvicorn_ws_options(None, settings.ws_max_message_bytes) if ws_options is None
                   else ws_options)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, lifespan="on",
                                log_level="warning", **options, **serving_options(settings))
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="live-server", daemon=True)
        self._started: Future[None] = Future()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve() -> None:
            task = asyncio.ensure_future(self.server.serve())
            while not self.server.started and not task.done():
                await asyncio.sleep(0.05)
            if task.done():
                self._started.set_exception(RuntimeError("the service did not start"))
            else:
                self._started.set_result(None)
            await task

        self.loop.run_until_complete(serve())

    def start(self, timeout: float = 120) -> LiveServer:
        self._thread.start()
        self._started.result(timeout)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(60)

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.serves_tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.settings.serves_tls else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/graphql"

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Runs a coroutine on the server's loop (where its driver lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def query_count(self) -> int:
        """Statements so far, once the background work of earlier writes (notifications) is
        done: counted from here, they would be charged to whatever runs next."""
        self.call(self.services.inbox.drain())
        return self.services.db.stats.queries

    def wipe(self) -> None:
        self.call(self.services.db.write_rows("MATCH (n) DETACH DELETE n"))
        self.services._known.clear()
