"""Fan-out benchmark: our roomEvents subscriptions against a raw Starlette WebSocket broadcast.

`python -m bench` (or `make bench`) runs everything; see docs/benchmarks.md.
"""
