"""GraphiQL in a real headless Chromium (the system's /usr/bin/chromium driven by playwright):
the page renders from the service's own bundle under its Content-Security-Policy, a query
with a token typed into the Headers tab runs, a subscription runs over graphql-transport-ws
with that token in connection_init, and no request ever leaves loopback."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, Request, Route, expect

from tests import browser
from tests.harness import LiveServer
from tests.personas import People, Persona, make_room
from tests.rt_helpers import attached, send
from transport.ide import CSP

# Collects what the page's Content-Security-Policy refused (none may be).
RECORD_CSP = """document.addEventListener('securitypolicyviolation', (e) => {
  (window.__csp = window.__csp || []).push(`${e.violatedDirective} ${e.blockedURI}`);
});"""
WAIT_MS = 30_000

@dataclass
class Traffic:
    """Every URL the page asked for, and what it refused to load."""

    requests: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {urllib.parse.urlsplit(url).hostname or "" for url in self.requests}


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with browser.chromium(tmp_path / "profile") as context:
        yield context


async def open_graphiql(context: BrowserContext, live: LiveServer, query: str
                        ) -> tuple[Page, Traffic]:
    traffic = Traffic()

    async def only_loopback(route: Route, request: Request) -> None:
        traffic.requests.append(request.url)
        if urllib.parse.urlsplit(request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", only_loopback)
    page = await context.new_page()
    page.on("websocket", lambda ws: traffic.requests.append(ws.url))
    page.on("requestfailed", lambda r: traffic.failures.append(r.url))
    page.on("console", lambda m: traffic.console_errors.append(m.text)
            if m.type == "error" else None)
    await page.add_init_script(RECORD_CSP)
    response = await page.goto(f"{live.url}/graphql?{urllib.parse.urlencode({'query': query})}",
                               wait_until="load")
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-eval" not in CSP
    await expect(page.locator(".graphiql-container")).to_be_visible(timeout=WAIT_MS)
    return page, traffic


async def enter_token(page: Page, who: Persona) -> None:
    """Types the header into the Headers tab, as a person would (Monaco closes the brackets
    and quotes it types over)."""
    await page.get_by_role("button", name="Headers").click()
    await page.locator(".graphiql-editor-tool .graphiql-editor").last.click()
    await page.keyboard.type(f'{{"Authorization": "Bearer {who.token}"}}')


async def run(page: Page) -> None:
    await page.locator(".graphiql-execute-button").click()


def assert_stayed_home(traffic: Traffic) -> None:
    """Loopback only, nothing failed, nothing refused by the policy."""
    assert traffic.requests, "no request was seen"
    assert traffic.hosts() == {"127.0.0.1"}, traffic.requests
    assert traffic.failures == [], traffic.failures
    assert not [e for e in traffic.console_errors if "Content Security Policy" in e]


async def test_graphiql_renders_offline_and_runs_a_query_with_a_token(
        fresh: LiveServer, people: People, chromium: BrowserContext) -> None:
    doctor = people.make_user("doctor")
    page, traffic = await open_graphiql(chromium, fresh, "{ me { id } }")
    # The query from the URL is in the editor, and the page explains the header.
    await expect(page.locator(".graphiql-query-editor")).to_contain_text("me { id }")
    await expect(page.locator("#help")).to_contain_text("Authorization")
    await expect(page.locator("#help")).to_contain_text("make token")

    await run(page)  # without a token: the field says so
    await expect(page.locator(".result-window")).to_contain_text("UNAUTHENTICATED",
                                                                 timeout=WAIT_MS)
    await enter_token(page, doctor)
    await run(page)
    await expect(page.locator(".result-window")).to_contain_text(doctor.id, timeout=WAIT_MS)
    # The explorer plugin lists the schema's fields (from introspection through the page).
    await page.get_by_role("button", name="Show GraphiQL Explorer").click()
    await expect(page.locator(".graphiql-explorer-root")).to_contain_text("rooms",
                                                                         timeout=WAIT_MS)
    assert await page.evaluate("window.__csp || []") == []
    assert_stayed_home(traffic)
    # The bundle and its workers came from the service, not from anywhere else.
    assert any(u.endswith("/graphiql/graphiql.js") for u in traffic.requests)
    assert any(u.endswith(".worker.js") for u in traffic.requests)


async def test_graphiql_subscribes_over_graphql_transport_ws(
        fresh: LiveServer, people: People, chromium: BrowserContext) -> None:
    host, member = people.make_user("doctor"), people.make_user("student")
    await member.gql("{ me { id } }")
    room = await make_room(host, invite=[member])
    subscription = (f'subscription {{ roomEvents(roomId: "{room["id"]}") '
                    "{ __typename ... on MessagePosted { message { content } } } }")
    page, traffic = await open_graphiql(chromium, fresh, subscription)
    await enter_token(page, member)
    await run(page)
    await attached(fresh, room["id"], 1, timeout=WAIT_MS / 1000)
    await send(host, room["id"], "seen in GraphiQL")
    await expect(page.locator(".result-window")).to_contain_text("seen in GraphiQL",
                                                                 timeout=WAIT_MS)
    assert any(u.startswith(f"ws://127.0.0.1:{fresh.port}/graphql") for u in traffic.requests)
    assert await page.evaluate("window.__csp || []") == []
    assert_stayed_home(traffic)
