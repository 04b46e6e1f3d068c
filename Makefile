# Two commands for a newcomer: `make run` and `make test`. Everything installs into .venv from
# requirements-dev.lock (runtime pins in requirements.lock plus tests, lint and load tests).
# Python 3.11 is the only prerequisite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/9

.PHONY: install console kernels static run test test-services test-embedded lint bench drill loadtest clean

$(VENV)/.installed: requirements.lock requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	touch $@

# The console's front end and the JavaScript SDK tests (pinned in package-lock.json).
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node.js 18+) is needed for the console and the JS SDK tests"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The matcher's compiled kernels, cached in matching/__pycache__ (recompiled when kernels.py changes).
kernels: $(VENV)/.installed
	@$(PY) -c "import matching.kernels as k; k.warm_up()"

# The console's front end (console/web), bundled with esbuild into console/static/console (gitignored);
# rebuilt only when its sources change.
CONSOLE_SOURCES := $(shell find console/web -type f 2>/dev/null)
console/static/console/app.js: node_modules/.installed $(CONSOLE_SOURCES)
	node console/web/build.mjs

console: console/static/console/app.js

# The admin's CSS and JS, gzip-compressed, in STATIC_ROOT (var/static): served by hub.static under
# every server. Collected again when an app's static files change.
STATIC_SOURCES := $(shell find $(wildcard */static) -type f 2>/dev/null)
var/.static-collected: $(VENV)/.installed $(STATIC_SOURCES) console/static/console/app.js
	HUB_ENV=$${HUB_ENV:-development} $(PY) manage.py collectstatic --noinput --verbosity 0
	@mkdir -p var && touch $@

static: var/.static-collected

install: $(VENV)/.installed node_modules/.installed kernels console static

# Embedded default: SQLite, in-process broker and state, offline AI provider.
run: install
	HUB_ENV=$${HUB_ENV:-development} $(PY) manage.py migrate --verbosity 0
	@if [ "$${HUB_ENV:-development}" = development ]; then HUB_ENV=development $(PY) manage.py load_demo; fi
	@echo "development token (customer 'dev-customer'):"
	@HUB_ENV=$${HUB_ENV:-development} $(PY) manage.py mint_token --user dev-customer --role customer --ttl 86400
	@echo
	@echo "console: http://$${HOST:-127.0.0.1}:$${PORT:-8000}/console/ (paste the token above, or use the development sign-in there)"
	HUB_ENV=$${HUB_ENV:-development} $(PY) manage.py serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# The whole suite against real Postgres and Redis, then the hub core again on the embedded default.
# TEST_WORKERS pytest processes share the work a file at a time (each with its own Postgres and
# Redis database: tests/conftest.py); TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test: install lint test-services test-embedded

test-services: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	  HUB_TEST_REQUIRE_SERVICES=1 $(PYTEST) tests

test-embedded: install
	env -u DATABASE_URL -u REDIS_URL HUB_TEST_EMBEDDED=1 $(PYTEST) tests/hub tests/core -m "not services"

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy hub core asgi.py rooms ai_assist matching console notify
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m bench

# Two hubs behind HAProxy, rolled and killed under 2,000 clients (bench/drill.py; DRILL_ARGS passes
# options, e.g. DRILL_ARGS="--clients 500"). Network namespaces when run as root, else loopback addresses.
drill: install
	$(PY) -m bench.drill $(DRILL_ARGS)

# Extra Locust arguments: make loadtest ARGS="-u 100 -t 2m" (or ARGS="--host http://hub:8000").
loadtest: install
	$(PY) -m loadtests.run $(ARGS)

clean:
	rm -rf $(VENV) var loadtests/reports node_modules console/static
