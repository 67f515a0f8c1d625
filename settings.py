"""Service configuration, read from the environment (names and defaults follow the seed)."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    DirectoryPath,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PLACEHOLDER_SECRET = "your-secret-key"
PLACEHOLDER_DB_PASSWORD = "password"


class ManifestOperation(BaseModel):
    id: str = Field(min_length=1)
    body: str = Field(min_length=1)
    name: str | None = None
    type: Literal["query", "mutation", "subscription"] | None = None


class PersistedQueryManifest(BaseModel):
    """The file `@apollo/generate-persisted-query-manifest` writes."""

    format: Literal["apollo-persisted-query-manifest"]
    version: Literal[1]
    operations: list[ManifestOperation]

    @property
    def bodies(self) -> dict[str, str]:
        """Every operation by its id and by the sha256 of its body (the id the generator
        uses by default; a custom id is accepted too)."""
        found: dict[str, str] = {}
        for operation in self.operations:
            found[operation.id] = operation.body
            found[hashlib.sha256(operation.body.encode()).hexdigest()] = operation.body
        return found


def read_manifest(path: Path) -> PersistedQueryManifest:
    try:
        return PersistedQueryManifest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ValueError(f"{path} is not an Apollo persisted-query manifest "
                         f"({where}: {first['msg']})") from None


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every variable of the seed's Configuration section, plus its tuning values."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # Service
    collaboration_host: str = "0.0.0.0"
    collaboration_port: int = Field(default=8002, ge=1, le=65535)
    debug: bool = False
    environment: Literal["production", "staging", "development", "test"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Graph database: NEO4J_URI unset starts the embedded ArcadeDB under graph_data_dir.
    neo4j_uri: str | None = None
    neo4j_user: str = "neo4j"
    neo4j_password: str = PLACEHOLDER_DB_PASSWORD
    neo4j_database: str | None = None
    graph_data_dir: Path = Path("data/graph")
    graph_heap: str = "512m"

    # Security
    jwt_secret_key: str = PLACEHOLDER_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_jwks_url: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    # Pub/sub: REDIS_URL unset keeps events inside this process.
    redis_url: str | None = None
    # A user stays online this long after their last socket closes (reconnects don't flicker).
    presence_grace_seconds: float = Field(default=3.0, ge=0, le=120)
    # Room events kept for resuming streams; an older cursor gets RESYNC_REQUIRED.
    event_log_retention: int = Field(default=10_000, ge=100, le=10_000_000)

    # Persisted operations: automatic persisted queries (hashes registered by clients) in a
    # bounded store, shared through Redis when REDIS_URL is set; with PERSISTED_QUERIES_ONLY
    # only the operations of the manifest run (trusted documents).
    persisted_queries_only: bool = False
    persisted_queries_manifest: FilePath | None = None
    persisted_queries_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    persisted_queries_cache_bytes: int = Field(default=16 * 1024 * 1024, ge=0,
                                               le=4 * 1024 * 1024 * 1024)
    persisted_queries_ttl: int = Field(default=7 * 24 * 3600, ge=60, le=365 * 24 * 3600)

    # The audit trail is always kept in the graph (auditEvents); this file also streams it as
    # JSON lines for a SIEM (appended to; its folder must exist).
    audit_log_file: Path | None = None
    # Off only to measure what the trail costs (make bench); refused outside development/test.
    audit_enabled: bool = True

    # AI integration (assistant/, README "Assistant"). The seed's `gemini-pro` is retired (the
    # API answers 404: AI_MODEL_UNAVAILABLE); the default is a current GA model.
    gemini_api_key: SecretStr | None = None
    ai_model_name: str = Field(default="gemini-3.5-flash", min_length=1,
                               pattern=r"^[A-Za-z0-9._/@-]+$")  # "models/...", tuned
    # vertex: Vertex AI (GOOGLE_CLOUD_PROJECT, GOOGLE_CLOUD_LOCATION, application default
    # credentials), covered by Google Cloud's HIPAA BAA; developer: the Gemini Developer API
    # (GEMINI_API_KEY), whose terms exclude clinical use: outside development it needs
    # AI_ALLOW_NON_BAA=true (synthetic data, teaching).
    ai_backend: Literal["vertex", "developer"] = "developer"
    ai_allow_non_baa: bool = False
    google_cloud_project: str | None = None
    google_cloud_location: str = "us-central1"
    # A proxy or gateway in front of the API (and the tests' fake server).
    gemini_base_url: str | None = Field(default=None, pattern=r"^https?://[^\s?#]+$")
    # Who may ask (participants with these user roles), and how much of the room is sent.
    ai_allowed_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["doctor", "teacher", "student"])
    ai_max_input_tokens: int = Field(default=8_000, ge=256, le=1_000_000)
    ai_max_output_tokens: int = Field(default=1_024, ge=16, le=65_536)
    # The service's own deadlines (the SDK's timeout means per read or total by transport).
    ai_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    ai_first_token_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    ai_retries: int = Field(default=2, ge=0, le=5)
    # Limits: per user (across rooms) and per room, per AI_RATE_PERIOD_SECONDS; answers
    # streaming at once (all instances, through Redis when REDIS_URL is set); tokens per room
    # per UTC day (0: unlimited).
    ai_user_requests: int = Field(default=10, ge=1, le=100_000)
    ai_room_requests: int = Field(default=30, ge=1, le=100_000)
    ai_rate_period_seconds: int = Field(default=600, ge=1, le=86_400)
    ai_max_concurrency: int = Field(default=4, ge=1, le=1_000)
    ai_daily_token_budget: int = Field(default=200_000, ge=0, le=1_000_000_000)

    # WebRTC
    stun_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["stun:stun.l.google.com:19302"]
    )
    turn_server_url: str | None = None
    turn_secret: str | None = None
    # A `turns:` url (TLS) offered next to TURN_SERVER_URL's udp and tcp variants.
    turns_server_url: str | None = None
    # Minted TURN credentials stop working for new allocations after this (clients re-fetch).
    turn_credential_ttl: int = Field(default=3600, ge=60, le=86_400)
    # Full mesh: at most this many participants send video; later ones join audio-only.
    call_max_video: int = Field(default=4, ge=0, le=50)
    # A participant whose last socket went away leaves the call after this (reconnects stay).
    call_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    # A participant nobody has heard of for this long (a crashed instance) is dropped.
    call_stale_seconds: float = Field(default=90.0, ge=5, le=3600)
    signal_rate: float = Field(default=20.0, gt=0, le=10_000)  # signals per second per session
    signal_burst: int = Field(default=50, ge=1, le=100_000)
    signal_sdp_max_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    signal_candidate_max_bytes: int = Field(default=1024, ge=128, le=64 * 1024)
    # Recordings (ENABLE_VIDEO_RECORDING) are written here, one file per track, mode 0600.
    recording_dir: Path = Path("data/recordings")

    # Files (files/): uploads up to MAX_UPLOAD_MB, stored encrypted under FILE_STORAGE_DIR
    # with data keys wrapped by FILE_MASTER_KEY (64 hex characters; development makes one per
    # data folder), scanned by clamd (CLAMAV_SOCKET, or CLAMAV_HOST and CLAMAV_PORT).
    max_upload_mb: int = Field(default=25, ge=1, le=2048)
    file_storage_dir: Path = Path("data/files")
    file_master_key: SecretStr | None = None
    clamav_socket: str | None = None
    clamav_host: str | None = None
    clamav_port: int = Field(default=3310, ge=1, le=65535)
    # "off" only when no scanner is wanted on purpose (production refuses to start without one).
    file_scanning: Literal["on", "off"] = "on"
    file_retention_days: int = Field(default=30, ge=0, le=3650)
    download_url_ttl: int = Field(default=300, ge=10, le=300)

    # Email notifications (notify/): digests for people who are not online.
    notification_email_delay_seconds: int = Field(default=300, ge=0, le=86_400)
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    email_from: str = "Collab <no-reply@localhost>"
    # Where users reach the service (links in emails and download URLs); unset: download URLs
    # name the host the request came to.
    public_base_url: str | None = None

    # Features
    enable_screen_sharing: bool = True
    enable_ai_assistant: bool = False
    enable_video_recording: bool = False

    # Performance tuning (the seed's YAML block)
    connection_pool_size: int = Field(default=20, ge=1, le=1000)
    cache_ttl: int = Field(default=3600, ge=0)
    # Operations per period per user (per client address before authentication).
    rate_limit_requests: int = Field(default=100, ge=1, le=1_000_000_000)
    rate_limit_period: int = Field(default=60, ge=1, le=86_400)
    ws_heartbeat_interval: int = Field(default=30, ge=1, le=3600)
    ws_max_connections: int = Field(default=50, ge=1, le=1_000_000)
    room_max_participants: int = Field(default=20, ge=2, le=10_000)
    chat_history_limit: int = Field(default=100, ge=1, le=10_000)

    # Transport security: production serves only TLS, its own or a trusted proxy's.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Proxies whose X-Forwarded-Proto/-For are believed (addresses or networks); none by
    # default, so nobody else can claim to have come over TLS or from another address.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Only for a TLS-terminating mesh that sends no X-Forwarded-Proto: plain http accepted.
    allow_insecure_http: bool = False
    hsts_max_age: int = Field(default=31_536_000, ge=0, le=63_072_000)


    # Limits (README "Limits"): what one operation, request or socket may ask for.
    operation_max_depth: int = Field(default=10, ge=1, le=100)
    operation_max_aliases: int = Field(default=15, ge=0, le=10_000)
    operation_max_directives: int = Field(default=50, ge=0, le=10_000)
    operation_max_tokens: int = Field(default=2_000, ge=100, le=1_000_000)
    operation_max_cost: int = Field(default=5_000, ge=1, le=1_000_000_000)
    request_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    request_timeout: float = Field(default=30.0, gt=0, le=3600)
    ws_max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    ws_max_subscriptions: int = Field(default=100, ge=1, le=1_000_000)
    ws_message_rate: float = Field(default=20.0, gt=0, le=1_000_000)  # messages per second
    ws_message_burst: int = Field(default=100, ge=1, le=1_000_000)
    # Unset: on in development and test, off in staging and production.
    enable_introspection: bool | None = None

    # Observability (README "Metrics and logs"). /metrics needs `Bearer <METRICS_TOKEN>`
    # when it is set; PROMETHEUS_MULTIPROC_DIR is read by prometheus_client itself (before
    # start-up), checked here; OpenTelemetry traces only with an OTLP/HTTP endpoint.
    metrics_token: SecretStr | None = None
    log_format: Literal["text", "json"] = "text"
    prometheus_multiproc_dir: DirectoryPath | None = None
    otel_exporter_otlp_endpoint: str | None = Field(default=None,
                                                    pattern=r"^https?://[^\s/?#]+[^\s?#]*$")
    otel_service_name: str = Field(default="collaboration-service", min_length=1)

    _split = field_validator("cors_origins", "stun_servers", "forwarded_allow_ips",
                             "ai_allowed_roles", mode="before")(_split_csv)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_long(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return token

    @field_validator("persisted_queries_manifest")
    @classmethod
    def _manifest_is_readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_manifest(path)
        return path

    @model_validator(mode="after")
    def _production_needs_a_real_secret(self) -> Settings:
        no_jwks = not (self.jwt_jwks_url or self.jwt_jwks_file)
        relaxed = self.is_development
        if not relaxed and no_jwks and self.jwt_secret_key == PLACEHOLDER_SECRET:
            raise ValueError(
                "JWT_SECRET_KEY: the placeholder secret is refused outside development; "
                "set JWT_SECRET_KEY (or JWT_JWKS_URL/JWT_JWKS_FILE) or ENVIRONMENT=development"
            )
        if self.jwt_secret_key != PLACEHOLDER_SECRET and len(self.jwt_secret_key) < 16:
            raise ValueError("JWT_SECRET_KEY: must be at least 16 characters")
        # The seed's default password only for a local server; the embedded database makes
        # its own random one and ignores this.
        if not relaxed and self.neo4j_uri and self.neo4j_password == PLACEHOLDER_DB_PASSWORD:
            raise ValueError(
                "NEO4J_PASSWORD: the default password is refused outside development; set "
                "NEO4J_PASSWORD to the graph database's password"
            )
        if not relaxed and not self.audit_enabled:
            raise ValueError("AUDIT_ENABLED: the audit trail cannot be turned off outside "
                             "development and test")
        if self.file_master_key is not None:
            try:
                ok = len(bytes.fromhex(self.file_master_key.get_secret_value())) == 32
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("FILE_MASTER_KEY: must be 64 hex characters (32 bytes)")
        elif not relaxed:
            raise ValueError("FILE_MASTER_KEY: files are encrypted at rest: set a 64-hex-"
                             "character master key (keep it outside the data's backups)")
        if (not relaxed and self.file_scanning == "on" and not self.clamav_socket
                and not self.clamav_host):
            raise ValueError("CLAMAV_SOCKET: uploads must be virus-scanned: set CLAMAV_SOCKET "
                             "or CLAMAV_HOST (or FILE_SCANNING=off on purpose)")
        if (not relaxed and self.enable_ai_assistant and self.ai_backend == "developer"
                and not self.ai_allow_non_baa):
            raise ValueError(
                "AI_BACKEND: the Gemini Developer API's terms exclude clinical use and no BAA "
                "covers it: use AI_BACKEND=vertex (GOOGLE_CLOUD_PROJECT) or set "
                "AI_ALLOW_NON_BAA=true for synthetic data only")
        if self.persisted_queries_only and self.persisted_queries_manifest is None:
            raise ValueError("PERSISTED_QUERIES_ONLY: needs PERSISTED_QUERIES_MANIFEST, the "
                             "file of the operations allowed to run")
        return self

    @model_validator(mode="after")
    def _production_serves_tls(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS_CERT_FILE: TLS_CERT_FILE and TLS_KEY_FILE go together")
        for name, path in (("TLS_CERT_FILE", self.tls_cert_file),
                           ("TLS_KEY_FILE", self.tls_key_file)):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if self.is_production and not (self.tls_cert_file or self.forwarded_allow_ips
                                       or self.allow_insecure_http):
            raise ValueError(
                "TLS_CERT_FILE: production serves only TLS: set TLS_CERT_FILE and "
                "TLS_KEY_FILE, or FORWARDED_ALLOW_IPS for a TLS-terminating proxy (or "
                "ALLOW_INSECURE_HTTP=true behind a mesh that terminates TLS)")
        return self

    @property
    def serves_tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def requires_tls(self) -> bool:
        """Plain http/ws refused (but for health probes): production, unless allowed."""
        return self.is_production and not self.allow_insecure_http

    @property
    def is_development(self) -> bool:
        """development or test: relaxed secrets, GraphiQL served."""
        return self.environment in ("development", "test")

    @property
    def introspection(self) -> bool:
        """`__schema`/`__type` answered (federation's `_service { sdl }` always is)."""
        if self.enable_introspection is None:
            return self.is_development
        return self.enable_introspection

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @cached_property
    def uses_embedded_graph(self) -> bool:
        return not self.neo4j_uri

    @cached_property
    def trusted_documents(self) -> dict[str, str]:
        """The manifest's operations by id (validated at start-up), or none."""
        path = self.persisted_queries_manifest
        return {} if path is None else read_manifest(path).bodies


def load_settings() -> Settings:
    """Settings from the environment; a bad value raises SystemExit naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper()
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if name else message)
        raise SystemExit("invalid configuration: " + "; ".join(problems)) from None
