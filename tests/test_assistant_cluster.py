"""The assistant across instances (two `python -m app` processes sharing one graph database
and one Redis, the fake Gemini server in the test process): an answer streaming on one
instance reaches subscribers of the other, is cancelled from the other (its upstream
connection closed), and the concurrency cap counts both instances' answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET, people_at
from tests.fake_gemini import FakeGemini
from tests.processes import Cluster, running_cluster
from tests.test_assistant import ASK, CANCEL, EVENTS, MODEL, case_room, finished
from tests.wsclient import connect

SLOW = {"text": tuple(f"part {n}. " for n in range(30)), "delay": 0.1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            fake_gemini_server: FakeGemini) -> Iterator[Cluster]:
    env = {"ENVIRONMENT": "test", "JWT_SECRET_KEY": SECRET, "ENABLE_AI_ASSISTANT": "true",
           "GEMINI_API_KEY": "AIza-test-key", "GEMINI_BASE_URL": fake_gemini_server.url,
           "AI_MODEL_NAME": MODEL, "AI_MAX_CONCURRENCY": "1"}
    with running_cluster(tmp_path_factory.mktemp("assistant-multi"), names=("a", "b"),
                         env=env) as running:
        yield running


@pytest.fixture
async def crowd(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Any]:
    async with people_at(cluster.services["a"].url, tmp_path) as people:
        yield people


async def test_streams_and_cancels_across_instances(cluster: Cluster, crowd: Any,
                                                    fake_gemini: FakeGemini) -> None:
    b = cluster.services["b"]  # the people talk to a
    room = await case_room(crowd)
    await room.say(room.host, "A long case")
    fake_gemini.script(MODEL, **SLOW)
    watcher = await connect(b.ws_url, room.teacher.token)
    await watcher.subscribe("ev", EVENTS, {"room": room.id})
    asked = (await room.host.gql(ASK, room=room.id, prompt="next?"))["askAssistant"]  # on a
    await watcher.until("ev", lambda e: "part 2." in e.get("reply", {}).get("text", ""))
    # Another question while this one streams: one answer at a time in the deployment.
    other = await case_room(crowd)
    on_b = crowd.at(other.host, b.url)
    body = await on_b.post(ASK, {"room": other.id, "prompt": "hi"})
    ext = body["errors"][0]["extensions"]
    assert (ext["code"], ext["reason"]) == ("AI_RATE_LIMITED", "concurrency")
    await crowd.at(room.host, b.url).gql(CANCEL, id=asked["id"])  # cancelled on b
    gone = await fake_gemini.wait_disconnect(3.0)
    assert gone.chunks_sent < 30
    ended = await watcher.until("ev", lambda e: e.get("reply", {}).get("done") is True)
    reply = ended[-1]["reply"]
    assert reply["status"] == "CANCELLED" and reply["text"].startswith("part 0. part 1.")
    await watcher.close()
    fake_gemini.reset()
    again = (await on_b.gql(ASK, room=other.id, prompt="hi"))["askAssistant"]
    assert (await finished(on_b, again["id"]))["status"] == "COMPLETE"
