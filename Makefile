# Conveyor: `make run` brings everything up, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-requirements
# The Tasks backend's tests also run on Django 6.0 (django.tasks), which needs Python 3.12+: a second venv.
VENV6 := .venv-django6
STAMP6 := $(VENV6)/.installed-requirements
PYTHON_DJANGO6 ?= $(shell for p in python3.14 python3.13 python3.12; do $$p -c '' 2>/dev/null && command -v $$p && exit; done; \
	ls -d $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V | tail -1)

.PHONY: run test test-cluster setup services venv venv-django6 lint bench costs cluster cluster-stop

# Flower keeps its task history in var/flower.db (--persistent), so it survives a restart. It always asks
# for a password: FLOWER_BASIC_AUTH when set, else one generated once into var/flower-auth (printed).
run: setup
	mkdir -p var
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py ensure_local_admin
	@echo "Web http://127.0.0.1:8000/jobs/  Admin http://127.0.0.1:8000/admin/  Flower http://127.0.0.1:5555/"
	FLOWER_BASIC_AUTH="$$($(BIN)/python -m scripts.flower_auth)" && export FLOWER_BASIC_AUTH \
		&& PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start

# The browser tests drive Debian's Chromium through Playwright, which never downloads a browser here. Then the
# Tasks backend's tests again on Django 6.0 (tests/tasks: 30 to 45 s here, plus 12 s to build its venv once).
test: setup venv-django6
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py ensure_services
	test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not cluster" $(PYTEST_ARGS)
	$(VENV6)/bin/python -m pytest tests/tasks

# The tests that start a RabbitMQ cluster of their own (marker `cluster`: the cluster script's and the failover
# test, about 2.5 minutes here), apart so that make test stays under 10 minutes; .ci/run runs both. As root, like
# make cluster.
test-cluster: setup
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py ensure_services
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

setup: services
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py collectstatic --noinput --verbosity 0

# RabbitMQ's management API gives the dashboard and Flower unacknowledged counts; on a local
# RabbitMQ (not Docker's, which has it) the plugin is enabled once, if it is not answering yet.
services: venv
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py ensure_services
	curl -sf -o /dev/null http://127.0.0.1:15672/ || ! command -v rabbitmq-plugins >/dev/null \
		|| rabbitmq-plugins enable rabbitmq_management >/dev/null || echo "RabbitMQ management API unavailable"

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

venv-django6: $(STAMP6)

$(STAMP6): requirements.txt requirements-django6.txt
	@test -n "$(PYTHON_DJANGO6)" || { echo "make test runs the Tasks backend's tests on Django 6.0, which needs Python" \
		"3.12 or later: install one (e.g. pyenv install 3.12), or name it with PYTHON_DJANGO6=/path/to/python3.12"; exit 1; }
	test -x $(VENV6)/bin/python || $(PYTHON_DJANGO6) -m venv $(VENV6)
	grep -v -i -E '^(django|django-tasks|playwright)==' requirements.txt | cat - requirements-django6.txt \
		> $(VENV6)/requirements.txt
	$(VENV6)/bin/python -m pip install --quiet --disable-pip-version-check -r $(VENV6)/requirements.txt
	touch $(STAMP6)

# The side-by-side benchmark (under 5 minutes); BENCH_ARGS="--large" adds the backlog test, --help lists
# every flag. wrk comes from Debian's packages; without it the benchmark uses its Python load generator.
bench: services
	command -v wrk >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq wrk) \
		|| echo "wrk could not be installed; the benchmark uses its Python load generator"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# What one job costs each part (CPU, PostgreSQL writes and WAL, RabbitMQ messages, relay passes): docs/scaling.md's
# figures, in bench/results/costs.{json,md}; about three minutes. COSTS_ARGS="--help" lists the sizes.
costs: services
	$(BIN)/python -m bench.costs $(COSTS_ARGS)

lint: venv
	$(BIN)/ruff check .

# Three RabbitMQ nodes clustered on this machine (conveyor-1..3@localhost, AMQP 5681-5683, files in
# var/cluster/); prints the CELERY_BROKER_URL that points Conveyor at all three. Run as root: Debian's
# scripts run the nodes as the rabbitmq user. The default node on 5672 is never touched.
cluster: venv
	$(BIN)/python -m scripts.rabbitmq_cluster start

cluster-stop: venv
	$(BIN)/python -m scripts.rabbitmq_cluster stop
