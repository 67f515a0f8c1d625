"""Resolvers: parse input, check access, call graph_db or a loader, return records."""
