# The README's two commands: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The Node clients and gateways the tests drive (tests/clients): installed from the lock file.
CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.installed

# Local runs default to development (GraphiQL on, the development JWT secret accepted);
# production sets ENVIRONMENT=production and real secrets in the environment.
export ENVIRONMENT ?= development

.PHONY: install clients run test lint schema schema-check token bench clean

install: $(STAMP)

clients: $(CLIENTS_STAMP)

$(CLIENTS_STAMP): $(CLIENTS)/package.json $(CLIENTS)/package-lock.json
	cd $(CLIENTS) && npm ci --no-audit --no-fund --loglevel=error
	touch $(CLIENTS_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

run: install
	$(PY) -m app

test: install clients lint schema-check
	ENVIRONMENT=test $(PY) -m pytest -q

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

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache $(CLIENTS)/node_modules
