# The README's two commands: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Local runs default to development (GraphiQL on, the development JWT secret accepted);
# production sets ENVIRONMENT=production and real secrets in the environment.
export ENVIRONMENT ?= development

.PHONY: install run test test-tools lint schema schema-check token bench firewall-report graphiql \
  clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -e /usr/lib/x86_64-linux-gnu/libmagic.so.1 -o -e /usr/lib/aarch64-linux-gnu/libmagic.so.1 \
	  || (apt-get update && apt-get install -y --no-install-recommends libmagic1)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

run: install
	$(PY) -m app

test: install lint schema-check test-tools
	ENVIRONMENT=test $(PY) -m pytest -q

# What the tests use besides Python packages: Chromium (GraphiQL in a browser; playwright
# drives this one and never downloads its own), redis-server, the npm packages of the
# GraphQL-over-HTTP audit, and the real clients and gateways the tests drive (tests/clients);
# coturn's turnserver, which tests/turn.py runs from a config of its own (calls' TURN tests).
# Debian's postinst starts the coturn service unless policy-rc.d forbids it (containers do);
# without systemd its init script starts nothing (TURNSERVER_ENABLED unset in
# /etc/default/coturn), but under systemd the unit would serve /etc/turnserver.conf on
# 0.0.0.0:3478: disable and stop it, the tests never use it. Likewise ClamAV's clamd, which
# tests/clamd.py runs offline with a signature database it writes (file scanning tests): under
# systemd, Debian's clamav-daemon units (service and its socket activation) and the freshclam
# updater (which would go to the network) are disabled and stopped.
AUDIT := tests/http_audit
CLIENTS := tests/clients
test-tools: $(AUDIT)/node_modules/.installed $(CLIENTS)/node_modules/.installed
	@test -x /usr/bin/chromium -a -x /usr/bin/redis-server \
	  || (apt-get update && apt-get install -y chromium redis-server)
	@test -x /usr/bin/turnserver \
	  || (apt-get update && apt-get install -y --no-install-recommends coturn \
	      && if [ -d /run/systemd/system ]; then systemctl disable --now coturn.service; fi)
	@test -x /usr/sbin/clamd \
	  || (apt-get update && apt-get install -y --no-install-recommends clamav-daemon \
	      && if [ -d /run/systemd/system ]; then \
	           systemctl disable --now clamav-daemon.socket clamav-daemon.service \
	             clamav-freshclam.service; fi)

$(AUDIT)/node_modules/.installed: $(AUDIT)/package-lock.json
	cd $(AUDIT) && npm ci --no-audit --no-fund
	touch $@

$(CLIENTS)/node_modules/.installed: $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Rebuilds GraphiQL's bundle (transport/graphiql/dist, committed) from the pinned packages.
graphiql:
	cd transport/graphiql && npm ci --no-audit --no-fund && npm run build

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

schema: install
	$(PY) -m schema.export > schema.graphql

schema-check: install
	@$(PY) -m schema.export | diff -u schema.graphql - \
	  || (echo "schema.graphql is out of date: run 'make schema'"; exit 1)
	$(PY) -m schema.contract

ROLE ?= doctor
NAME ?= Dev User
token: install
	@$(PY) -m auth.dev_token --role "$(ROLE)" --name "$(NAME)"

# Both benches (fan-out, then HTTP; docs/benchmarks.md). The HTTP bench's load generator is
# Debian's wrk; taskset (util-linux) pins servers and load generators to their cores. First,
# the PHI firewall's report (no service needed, a second).
bench: install
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) -m bench.firewall
	$(PY) -m bench

# The PHI firewall (assistant/firewall.py) on its synthetic corpus: recall and precision on the
# main and held-out sets; fails if a participant's name or email is missed.
firewall-report: install
	$(PY) -m bench.firewall

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache $(AUDIT)/node_modules $(CLIENTS)/node_modules \
	  transport/graphiql/node_modules
