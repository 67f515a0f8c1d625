"""Graph database access: the Bolt driver and the embedded ArcadeDB server."""
