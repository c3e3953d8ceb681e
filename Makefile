# The two commands of the README: `make build` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: build test venv system-packages bench bench-ldap bench-mx clean portal-demo

build: $(BIN)/mailgw
	$(BIN)/mailgw build

test: $(BIN)/mailgw system-packages
	$(BIN)/python -m pytest

venv: $(BIN)/mailgw

# Re-run when the dependency pins change.
$(BIN)/mailgw: pyproject.toml requirements.lock scripts/setup-venv
	PYTHON=$(PYTHON) VENV=$(VENV) scripts/setup-venv
	@touch $@

system-packages:
	@scripts/system-packages

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# The benchmark of docs/performance.md: `make bench`, or `make bench ADDRESSES=1000000 RUNS=3`.
ADDRESSES ?= 100000
RUNS ?= 5
bench: $(BIN)/mailgw
	$(BIN)/python bench/run.py --addresses $(ADDRESSES) --runs $(RUNS)

# The LDAP server's benchmark (docs/performance.md): a one-domain change applied online against a full reload.
bench-ldap: $(BIN)/mailgw
	$(BIN)/python bench/ldap.py --addresses $(ADDRESSES) --runs $(RUNS)

# The MX benchmark of docs/performance.md, as root like 'make test': prints its table and rewrites the page's
# results block. Options: `make bench-mx BENCH_MX="--sizes 100000 --runs 5"` (bench/mx.py --help).
BENCH_MX ?=
bench-mx: $(BIN)/mailgw system-packages
	$(BIN)/python bench/mx.py --write-doc docs/performance.md $(BENCH_MX)

# Try the quarantine portal locally (docs/quarantine.md): SQLite, a mock AAI sign-in, out/'s directory.
portal-demo: $(BIN)/mailgw
	$(BIN)/python -m tests.portal_demo --out out
