"""DataLoaders: one per entity or relation, each batch one `UNWIND $ids` query."""

from loaders.registry import Loaders

__all__ = ["Loaders"]
