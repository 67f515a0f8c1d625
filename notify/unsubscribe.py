"""/notifications/unsubscribe/<token>: the one-click unsubscribe of digest emails (RFC 8058).
Only a POST acts: mail scanners open GET links (GitLab unsubscribed users that way), so a
GET answers a page whose button POSTs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from graph_db import digests as outbox
from resolvers.context import Services

PAGE = """<!doctype html><meta charset="utf-8"><title>Unsubscribe</title>
<form method="post"><p>Stop notification emails from Collab?</p>
<button type="submit">Unsubscribe</button></form>"""
HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer",
           "content-security-policy": "default-src 'none'; form-action 'self'"}


class UnsubscribeEndpoint:
    """Checks tokens with the digests' own (made once, at start-up)."""

    async def handle(self, request: Request) -> Response:
        services: Services = request.app.state.services
        user_id = services.digests.unsubscribe.user_of(request.path_params["token"])
        if user_id is None:
            return PlainTextResponse("not found\n", status_code=404, headers=HEADERS)
        if request.method != "POST":
            return HTMLResponse(PAGE, headers=HEADERS)
        await outbox.update_settings(services.db, user_id, email="OFF", dnd_until=None,
                                     clear_dnd=False, rooms={})
        return PlainTextResponse("You will get no more notification emails.\n",
                                 headers=HEADERS)
