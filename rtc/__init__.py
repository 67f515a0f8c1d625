"""WebRTC: signaling, TURN credentials, server-side peers (later issues)."""
