# Avila Analytics: two commands from a fresh clone -- `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
TEST_STAMP    := $(VENV)/.test-installed

.PHONY: help install run demo test test-data lint coverage bench bench-ingest bench-analytics bench-dashboard clean

help:
	@echo "make run        set up .venv, load demo data if the store is empty, start the server"
	@echo "make test       set up and run the whole test suite"
	@echo "make lint       ruff check + format check + mypy --strict on src/"
	@echo "make coverage   HTML coverage report in htmlcov/"
	@echo "make bench      run the benchmarks and print their figures"

$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(TEST_STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(RUNTIME_STAMP)

.env:
	cp .env.example .env

run: $(RUNTIME_STAMP) .env
	@url="$${AVILA_STORAGE_URL:-$$(sed -n 's/^AVILA_STORAGE_URL=//p' .env | tail -n 1)}"; \
	  case "$$url" in chdb:*) $(BIN)/python -c "import chdb" 2>/dev/null || \
	    $(BIN)/python -m pip install --quiet -e '.[chdb]';; esac
	$(BIN)/avila demo --if-empty --users 1000 --days 30
	$(BIN)/avila demo --factory --days 7
	@port="$${PORT:-$$(sed -n 's/^PORT=//p' .env | tail -n 1)}"; \
	  key=$$(printf '%s' "$${API_KEYS:-$$(sed -n 's/^API_KEYS=//p' .env | tail -n 1)}" | cut -d, -f1); \
	  echo "Dashboard: http://localhost:$${port:-3000}/  (sign in with the demo key $${key:-dev-key-123})"
	$(BIN)/avila serve

demo: $(RUNTIME_STAMP) .env
	$(BIN)/avila demo

test-data: $(TEST_STAMP)
	$(BIN)/python scripts/fetch_test_data.py

# Test files run in parallel, one pytest-xdist worker per core (at most 4), each file whole in
# one worker (its module fixtures start once). Most tests wait on real server processes, so
# on 2 cores the suite took 10 min instead of 18 (2026-12-01); 12 min for 2,697 tests on a
# slower 2-core VM (2026-12-02, was 20 before that day's work). On that day's later AMD EPYC
# VM the same tree (f054fd9) took 19 min, 1,932 CPU-s: the machine, not the tests, moved it.
# TEST_WORKERS=0: one process.
# compileall first: the suite starts hundreds of servers and CLI commands, and where the
# environment sets PYTHONDONTWRITEBYTECODE (this machine's does) each would compile src/ again.
TEST_WORKERS ?= auto
test: $(TEST_STAMP) test-data
	$(BIN)/python -m compileall -q src tests
	$(BIN)/pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

coverage: $(TEST_STAMP) test-data
	$(BIN)/pytest --cov=avila --cov-report=html --cov-report=term
	@echo "report: htmlcov/index.html"

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/run_all.py

bench-ingest: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_ingest.py

bench-analytics: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_analytics.py

bench-dashboard: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_dashboard.py

clean:
	rm -rf $(VENV) htmlcov .pytest_cache .ruff_cache .coverage
