"""Live room streams: pub/sub backends, ordered once-per-room fan-out, presence and typing."""
