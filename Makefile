# The two commands that matter: `make run` and `make test`. Both work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench loadtest install clean-data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start the whole backend (embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set) with demo data.
run: $(STAMP)
	$(BIN)/tzt serve

## Run the whole test suite against real PostgreSQL and Redis (embedded unless DATABASE_URL / REDIS_URL are set).
test: $(STAMP)
	$(BIN)/python -m pytest

## Speed of the one code, from one run (one Granian worker; about three minutes on a quiet machine): code issues and
## online verifications per second against the trivial endpoint, the offline verifier against raw `cryptography`, and
## the deny list's memory and lookup time for ten million entries. Ratios below their goals are reported, not failures.
bench: $(STAMP)
	$(BIN)/python -m loadtests.bench

## Locust load test of one scenario, sized from the event's numbers and judged by its objectives (docs/load-testing.md):
## make loadtest SCENARIO=morning_rush|event_entry|health_surge|payment_burst|city_day|login_storm
## [TARGET=URL CREDENTIALS=FILE]
## [WORKERS=N] [ATTENDEES=N WINDOW=MIN GATES=N] [MINUTES=3] [ARGS="--redis-outage 20"]. Reports go to reports/.
loadtest: $(STAMP)
	$(BIN)/python -m loadtests.run $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(TARGET),--target $(TARGET)) \
		$(if $(CREDENTIALS),--credentials $(CREDENTIALS)) $(if $(WORKERS),--distributed $(WORKERS)) \
		$(if $(ATTENDEES),--attendees $(ATTENDEES)) $(if $(WINDOW),--window-minutes $(WINDOW)) \
		$(if $(GATES),--gates $(GATES)) $(if $(MINUTES),--test-minutes $(MINUTES)) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app_backend code_service payments mini_programs

## Remove the local data folder (embedded databases, dev keys).
clean-data:
	rm -rf .data
