"""Start-up and shutdown: configuration errors name the variable, the schema is created once
and data survives a restart, and `python -m app` starts, logs safely and stops cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from auth import issue_dev_token
from graph_db.embedded import PASSWORD_FILE, find_free_port
from graph_db.models import Role
from graph_db.schema_setup import STATEMENTS, ensure_schema
from settings import PLACEHOLDER_SECRET, load_settings
from tests.conftest import SECRET
from tests.conftest import make_settings as settings_for
from tests.harness import LiveServer
from tests.processes import java_pids

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = sorted(re.findall(r"CREATE CONSTRAINT (\w+)", " ".join(STATEMENTS)))
INDEXES = sorted(re.findall(r"CREATE INDEX (\w+)", " ".join(STATEMENTS)))
_SETTINGS_VARS = ("ENVIRONMENT", "JWT_SECRET_KEY", "JWT_JWKS_URL", "JWT_JWKS_FILE",
                  "COLLABORATION_PORT", "ROOM_MAX_PARTICIPANTS", "LOG_LEVEL", "NEO4J_URI",
                  "JWT_LEEWAY_SECONDS", "CONNECTION_POOL_SIZE", "NEO4J_PASSWORD",
                  "TLS_CERT_FILE", "TLS_KEY_FILE", "FORWARDED_ALLOW_IPS", "ALLOW_INSECURE_HTTP")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _SETTINGS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENVIRONMENT", "development")
    # Production serves only TLS (tests/test_transport_security.py), encrypts files with a
    # master key and scans them (test_files_need_a_key_and_a_scanner): not the point here.
    monkeypatch.setenv("ALLOW_INSECURE_HTTP", "true")
    monkeypatch.setenv("FILE_MASTER_KEY", "ab" * 32)
    monkeypatch.setenv("CLAMAV_SOCKET", "/run/clamav/clamd.ctl")
    return monkeypatch


# --- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("COLLABORATION_PORT", "abc"),
    ("COLLABORATION_PORT", "70000"),
    ("ROOM_MAX_PARTICIPANTS", "1"),
    ("ROOM_MAX_PARTICIPANTS", "many"),
    ("LOG_LEVEL", "chatty"),
    ("ENVIRONMENT", "moon"),
    ("JWT_LEEWAY_SECONDS", "-1"),
    ("CONNECTION_POOL_SIZE", "0"),
])
def test_bad_value_names_the_variable(clean_env: pytest.MonkeyPatch, name: str,
                                      value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    message = str(info.value.code)
    assert message.startswith("invalid configuration:")
    assert f"{name}:" in message, message


def test_good_values_load(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("COLLABORATION_PORT", "9100")
    clean_env.setenv("ROOM_MAX_PARTICIPANTS", "2")
    clean_env.setenv("CORS_ORIGINS", "https://a.example, https://b.example,")
    settings = load_settings()
    assert (settings.collaboration_port, settings.room_max_participants) == (9100, 2)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.jwt_secret_key == PLACEHOLDER_SECRET  # fine in development


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_placeholder_secret_refused_outside_development(clean_env: pytest.MonkeyPatch,
                                                        environment: str) -> None:
    clean_env.setenv("ENVIRONMENT", environment)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert "JWT_SECRET_KEY" in str(info.value.code)
    clean_env.setenv("JWT_SECRET_KEY", PLACEHOLDER_SECRET)
    with pytest.raises(SystemExit):
        load_settings()
    clean_env.setenv("JWT_SECRET_KEY", "short")
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert "JWT_SECRET_KEY" in str(info.value.code)
    clean_env.setenv("JWT_SECRET_KEY", SECRET)
    assert load_settings().is_production is (environment == "production")


@pytest.mark.parametrize("environment", ["production", "staging", "development", "test"])
def test_default_database_password_refused_outside_development(
        clean_env: pytest.MonkeyPatch, environment: str) -> None:
    clean_env.setenv("ENVIRONMENT", environment)
    clean_env.setenv("JWT_SECRET_KEY", SECRET)
    clean_env.setenv("NEO4J_URI", "bolt://graph.internal:7687")
    relaxed = environment in ("development", "test")
    if relaxed:
        assert load_settings().neo4j_password == "password"
    else:
        with pytest.raises(SystemExit) as info:
            load_settings()
        assert "NEO4J_PASSWORD:" in str(info.value.code)
    clean_env.setenv("NEO4J_PASSWORD", "a-real-database-password")
    assert load_settings().neo4j_password == "a-real-database-password"
    clean_env.delenv("NEO4J_URI")  # the embedded database makes its own password
    clean_env.delenv("NEO4J_PASSWORD")
    assert load_settings().neo4j_uri is None


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_files_need_a_key_and_a_scanner(clean_env: pytest.MonkeyPatch, environment: str) -> None:
    clean_env.setenv("ENVIRONMENT", environment)
    clean_env.setenv("JWT_SECRET_KEY", SECRET)
    clean_env.delenv("FILE_MASTER_KEY")
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert "FILE_MASTER_KEY:" in str(info.value.code)
    clean_env.setenv("FILE_MASTER_KEY", "not hex")
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert "FILE_MASTER_KEY: must be 64 hex" in str(info.value.code)
    clean_env.setenv("FILE_MASTER_KEY", "ab" * 32)
    clean_env.delenv("CLAMAV_SOCKET")
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert "CLAMAV_SOCKET:" in str(info.value.code)
    clean_env.setenv("FILE_SCANNING", "off")  # on purpose: then it starts
    assert load_settings().file_scanning == "off"


# --- restart on the same data directory -----------------------------------------------------


def schema_names(server: LiveServer) -> tuple[list[str], list[str]]:
    db = server.services.db
    constraints = [r["name"] for r in server.call(db.read_rows("SHOW CONSTRAINTS"))]
    indexes = [r["name"] for r in server.call(db.read_rows("SHOW INDEXES"))
               if r.get("owningConstraint") is None]
    return sorted(constraints), sorted(indexes)


def gql(server: LiveServer, token: str, query: str, **variables: object) -> dict[str, object]:
    response = httpx.post(f"{server.url}/graphql", json={"query": query, "variables": variables},
                          headers={"authorization": f"Bearer {token}"}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and not body.get("errors"), body
    data: dict[str, object] = body["data"]
    return data


def test_restart_keeps_data_and_creates_the_schema_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "graph"
    assert not data_dir.exists()
    settings = settings_for(data_dir)
    token = issue_dev_token(settings, user_id="doc-restart", name="Dr Restart",
                            role=Role.DOCTOR)
    create = ('mutation { createRoom(input: {name: "Survivor", type: TEACHING}) '
              '{ id } }')

    first = LiveServer(settings).start()
    try:
        room_id = gql(first, token, create)["createRoom"]["id"]  # type: ignore[index]
        assert schema_names(first) == (CONSTRAINTS, INDEXES)
        # Running the DDL again (what every start does) adds nothing and raises nothing.
        first.call(ensure_schema(first.services.db))
        assert schema_names(first) == (CONSTRAINTS, INDEXES)
    finally:
        first.stop()

    caplog.clear()
    second = LiveServer(settings_for(data_dir)).start()
    try:
        assert schema_names(second) == (CONSTRAINTS, INDEXES)
        room = gql(second, token, "query($id: ID!) { room(id: $id) { name host { id } } }",
                   id=room_id)["room"]
        assert room == {"name": "Survivor", "host": {"id": "doc-restart"}}
        count = second.call(second.services.db.read_rows("MATCH (r:Room) RETURN count(r) AS n"))
        assert count == [{"n": 1}]
    finally:
        second.stop()
    errors = [r for r in caplog.records if r.levelno >= 40]
    assert not errors, [r.getMessage() for r in errors]


# --- `python -m app` ------------------------------------------------------------------------


def wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path,
               timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} during start-up:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"not ready within {timeout} s:\n{log.read_text()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_python_m_app_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    data_dir = tmp_path / "graph"
    port = find_free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JWT_", "NEO4J_", "REDIS_")) and k not in _SETTINGS_VARS}
    env.update(ENVIRONMENT="development", GRAPH_DATA_DIR=str(data_dir), LOG_LEVEL="INFO",
               COLLABORATION_PORT=str(port), COLLABORATION_HOST="127.0.0.1",
               PYTHONUNBUFFERED="1")
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, port, log)
        (jvm,) = java_pids(data_dir)
        password = (data_dir / PASSWORD_FILE).read_text().strip()
        assert len(password) >= 16
        # The password is passed as a file path, never on a command line.
        assert password.encode() not in Path(f"/proc/{jvm}/cmdline").read_bytes()

        proc.send_signal(sig)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert f"127.0.0.1:{port}" in text
    assert "embedded ArcadeDB" in text and str(data_dir.resolve()) in text
    assert password not in text
    assert password not in (data_dir / "server.log").read_text(errors="replace")
    assert "Traceback" not in text, text
    assert "Application shutdown complete" in text
    # Which fan-out write path is in use is said at start-up (the fast one under make run).
    assert "fan-out: frames written directly to uvicorn's websockets-sansio transport" in text
    deadline = time.monotonic() + 10
    while java_pids(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert java_pids(data_dir) == []


@pytest.mark.parametrize("environment", ["production", "staging", "development", "test"])
def test_graphiql_only_in_development_and_test(environment: str, tmp_path: Path) -> None:
    from app import create_app

    app = create_app(settings_for(tmp_path, environment=environment, allow_insecure_http=True))
    paths = {getattr(route, "path", None) for route in app.routes}
    assert ("/graphiql/{name}" in paths) is (environment in ("development", "test"))
