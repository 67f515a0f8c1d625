"""How GraphQL reaches clients: the HTTP/WebSocket endpoint and connection authentication."""
