"""Factories and named personas: one client per role, each with its own token."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from auth import issue_dev_token
from auth.tokens import Role
from settings import Settings

_names = itertools.count(1)


class GraphQLErrors(AssertionError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors

    @property
    def codes(self) -> list[str]:
        return [e.get("extensions", {}).get("code") for e in self.errors]


@dataclass
class Persona:
    """A signed-in user of one role with an HTTP client of their own."""

    id: str
    name: str
    role: Role
    token: str
    client: httpx.AsyncClient = field(repr=False)

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The raw GraphQL response body."""
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}},
            headers={"authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def gql(self, query: str, variables: dict[str, Any] | None = None, **kw: Any
                  ) -> dict[str, Any]:
        """The data of a successful operation; raises GraphQLErrors otherwise."""
        body = await self.post(query, {**(variables or {}), **kw})
        if body.get("errors"):
            raise GraphQLErrors(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def error(self, query: str, variables: dict[str, Any] | None = None, **kw: Any
                    ) -> str:
        """The single error code an operation fails with."""
        body = await self.post(query, {**(variables or {}), **kw})
        assert body.get("errors"), f"expected an error, got {body}"
        codes = {e.get("extensions", {}).get("code") for e in body["errors"]}
        assert len(codes) == 1, body["errors"]
        return codes.pop()


class People:
    """make_user(role=...) for tests; every persona shares the live server's base URL."""

    def __init__(self, settings: Settings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url
        self.clients: list[httpx.AsyncClient] = []

    def token_for(self, user_id: str, name: str, role: Role, *,
                  ttl: timedelta = timedelta(hours=1), email: str | None = None) -> str:
        return issue_dev_token(self.settings, user_id=user_id, name=name, role=role, ttl=ttl,
                               email=email)

    def make_user(self, role: Role | str = Role.DOCTOR, name: str | None = None, *,
                  email: str | None = None) -> Persona:
        role = Role(role.lower()) if isinstance(role, str) else role
        name = name or f"{role.value.title()} {next(_names)}"
        user_id = f"{role.value}-{uuid.uuid4().hex[:10]}"
        client = httpx.AsyncClient(base_url=self.base_url, timeout=30)
        self.clients.append(client)
        return Persona(user_id, name, role, self.token_for(user_id, name, role, email=email),
                       client)

    def at(self, persona: Persona, base_url: str) -> Persona:
        """The same user (same token) talking to another instance."""
        client = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.clients.append(client)
        return dataclasses.replace(persona, client=client)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


CREATE_ROOM = """
mutation($input: CreateRoomInput!) {
  createRoom(input: $input) { id name type visibility maxParticipants }
}"""


async def make_room(host: Persona, *, visibility: str = "PRIVATE", type: str = "CASE_DISCUSSION",
                    name: str = "Case 1", invite: list[Persona] | None = None,
                    **extra: Any) -> dict[str, Any]:
    payload = {"name": name, "type": type, "visibility": visibility,
               "inviteUserIds": [p.id for p in invite or []], **extra}
    data = await host.gql(CREATE_ROOM, input=payload)
    room: dict[str, Any] = data["createRoom"]
    return room
