"""Persisted operations: automatic persisted queries as Apollo Client's persisted-queries link
speaks them, and trusted documents (PERSISTED_QUERIES_ONLY with a manifest).

`extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}`:
- a hash alone that is known runs its document; unknown, it is PersistedQueryNotFound, and
  the client sends the hash again with the document, which is then stored under it;
- a document with a hash that is not its sha256 is refused (BAD_REQUEST);
- with PERSISTED_QUERIES_ONLY only the manifest's operations run, sent by hash or in full;
  anything else is PERSISTED_QUERY_NOT_ALLOWED, and no document is ever stored.
The same rules apply to HTTP and to graphql-transport-ws subscribe messages.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resolvers.errors import ServiceError
from transport.document_store import DocumentStore
from transport.errors import BadRequest, PersistedQueryNotAllowed, PersistedQueryNotFound

# sha256 hex, or a manifest's own ids (the generator allows custom ones).
_HASH = re.compile(r"[A-Za-z0-9_.:+/=-]{1,128}")
MISMATCH = "provided sha does not match query"  # Apollo Server's words


def sha256_hex(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Resolved:
    query: str | None  # None: the request carries no document at all
    register: str | None = None  # store the document under this hash once it validates


class PersistedOperations:
    def __init__(self, store: DocumentStore, manifest: Mapping[str, str], *,
                 only: bool) -> None:
        self.store = store
        self.manifest = dict(manifest)
        self.only = only
        self._manifest_hashes = {sha256_hex(body) for body in self.manifest.values()}

    async def resolve(self, query: str | None, extensions: Mapping[str, Any] | None
                      ) -> Resolved:
        """The document to run; raises BadRequest, PersistedQueryNotFound or
        PersistedQueryNotAllowed."""
        wanted = persisted_hash(extensions)
        if wanted is None:
            if query is not None and self.only and sha256_hex(query) not in \
                    self._manifest_hashes:
                raise PersistedQueryNotAllowed
            return Resolved(query)
        listed = self.manifest.get(wanted)
        if self.only:
            if listed is None:
                raise PersistedQueryNotAllowed
            if query is not None and query != listed:
                raise BadRequest(MISMATCH)
            return Resolved(listed)
        if query is not None:
            if query != listed and sha256_hex(query) != wanted:
                raise BadRequest(MISMATCH)
            return Resolved(query, None if listed is not None else wanted)
        known = listed if listed is not None else await self.store.get(wanted)
        if known is None:
            raise PersistedQueryNotFound
        return Resolved(known)

    async def register(self, sha256: str, document: str) -> None:
        await self.store.put(sha256, document)

    async def admit(self, payload: dict[str, Any]) -> list[dict[str, Any]] | None:
        """For a graphql-transport-ws subscribe payload: None to go on (with `query` filled
        in when only a hash came), else the errors of the `error` message to answer with."""
        if not payload.get("extensions") and not self.only:
            return None
        try:
            resolved = await self.resolve(payload.get("query") or None,
                                          payload.get("extensions"))
        except ServiceError as error:
            return [dict(error.formatted)]
        if resolved.query is not None:
            payload["query"] = resolved.query
        return None


def persisted_hash(extensions: Mapping[str, Any] | None) -> str | None:
    """The hash of `extensions.persistedQuery`, checked; None without one."""
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, Mapping):
        raise BadRequest("extensions.persistedQuery must be an object")
    if persisted.get("version") != 1:
        raise BadRequest("Unsupported persisted query version")
    wanted = persisted.get("sha256Hash")
    if not isinstance(wanted, str) or not _HASH.fullmatch(wanted):
        raise BadRequest("extensions.persistedQuery.sha256Hash must be the document's "
                         "sha256 in hex")
    return wanted
