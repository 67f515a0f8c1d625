"""GraphiQL, served from the bundle in transport/graphiql/dist (built from pinned npm packages
by `make graphiql`, committed), never from a CDN, under a strict Content-Security-Policy.

The policy: scripts, workers, fonts, images and connections only from this origin ('self';
in CSP Level 3 that covers ws:/wss: to this host, for subscriptions); no inline script, no
eval, no plugins, no framing. Styles also allow 'unsafe-inline': Monaco (the editor) and
GraphiQL's components create <style> elements and style attributes at run time, and styles
cannot run code. Fonts and images also allow data: URIs, which the stylesheets embed (icons).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response

DIST = Path(__file__).resolve().parent / "graphiql" / "dist"
ASSET_PREFIX = "/graphiql/"
CSP = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "worker-src 'self'",
    "connect-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "font-src 'self' data:",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".ttf": "font/ttf", ".txt": "text/plain; charset=utf-8"}
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "no-referrer"}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Collaboration service · GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ASSET_PREFIX}graphiql.css">
<script defer src="{ASSET_PREFIX}graphiql.js"></script>
</head>
<body>
<div id="help">
Every operation needs a token: open the <b>Headers</b> tab below and enter
<code>{{"Authorization": "Bearer &lt;token&gt;"}}</code> (a development token:
<code>make token ROLE=doctor NAME="Dr A"</code>). Subscriptions run over graphql-transport-ws
at <code>/graphql</code> and send the same header in <code>connection_init</code>.
<a href="{ASSET_PREFIX}THIRD-PARTY-LICENSES.txt">Licences</a>
</div>
<div id="graphiql">Loading GraphiQL…</div>
</body>
</html>
"""


class GraphiQL:
    def __init__(self, dist: Path = DIST) -> None:
        # Only the files that are there at start-up are ever served: no path from a URL
        # reaches the file system.
        self.files = {p.name: p for p in dist.iterdir() if p.is_file()} if dist.is_dir() else {}

    def page(self) -> Response:
        return HTMLResponse(PAGE, headers={**SECURITY_HEADERS, "vary": "Accept"})

    async def asset(self, request: Request) -> Response:
        path = self.files.get(request.path_params["name"])
        if path is None:
            return PlainTextResponse("Not Found", status_code=404)
        media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media,
                            headers={**SECURITY_HEADERS, "cache-control": "no-cache"})
