# The collaboration service for production: a multi-stage build, a non-root user, a health
# check on /readyz. Not built here (no Docker engine on the development machines); what was
# checked instead is in the README ("Deployment").

# --- build: the service and its dependencies into a virtual environment ---------------------
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /venv
COPY pyproject.toml README.md ./
COPY app.py settings.py ./
COPY assistant assistant
COPY audit audit
COPY auth auth
COPY files files
COPY graph_db graph_db
COPY loaders loaders
COPY notify notify
COPY observability observability
COPY realtime realtime
COPY resolvers resolvers
COPY rtc rtc
COPY schema schema
COPY transport transport
RUN /venv/bin/pip install --no-cache-dir --disable-pip-version-check .

# --- run: only the virtual environment, as an unprivileged user -----------------------------
FROM python:3.11-slim
# libmagic: uploads' types are detected from their bytes (files/sniff.py, python-magic).
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /srv/collab --create-home collab
COPY --from=build /venv /venv
WORKDIR /srv/collab
USER collab
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ENVIRONMENT=production \
    COLLABORATION_HOST=0.0.0.0 \
    COLLABORATION_PORT=8002 \
    GRAPH_DATA_DIR=/srv/collab/data/graph \
    FILE_STORAGE_DIR=/srv/collab/data/files \
    RECORDING_DIR=/srv/collab/data/recordings
EXPOSE 8002
# /readyz needs no TLS and no token (it says whether the graph database answers); over https
# when the service terminates TLS itself (its certificate is for the public name, not for
# 127.0.0.1, hence no verification on this loopback probe).
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 CMD \
  python -c "import os, ssl, urllib.request as u; s = 'https' if os.environ.get('TLS_CERT_FILE') else 'http'; u.urlopen(f'{s}://127.0.0.1:8002/readyz', timeout=4, context=ssl._create_unverified_context())"
CMD ["python", "-m", "app"]
