# Keyhold developer commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PY_PATHS := src tests scripts $(wildcard bench)
# `buf breaking` compares proto/ with the last release's contracts, kept as a buf image
# and replaced at each release (README, "Development").
PROTO_BASELINE ?= proto/releases/v0.1.0.binpb
# `make bench` runs the recorded RPC benchmark; `make bench BENCH_ARGS="rpc --help"` one part.
BENCH_ARGS ?= report

NODE_TESTS := tests/node
TS_CLIENT := clients/typescript
NODE_PACKAGES := $(NODE_TESTS)/node_modules/.package-lock.json $(TS_CLIENT)/node_modules/.package-lock.json

.PHONY: install generate lint format test run bench clean

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The server depends on keyhold-client (clients/python): both from this tree.
	$(BIN)/python -m pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

generate: install $(TS_CLIENT)/node_modules/.package-lock.json
	$(BIN)/python scripts/generate_protos.py
	$(BIN)/buf generate  # buf.gen.yaml: the TypeScript contracts in $(TS_CLIENT)/gen

lint: install
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/buf breaking --against $(PROTO_BASELINE)

format: install
	$(BIN)/ruff format $(PY_PATHS)
	$(BIN)/ruff check --fix $(PY_PATHS)
	$(BIN)/buf format -w

test: install $(NODE_PACKAGES)
	$(BIN)/pytest $(PYTEST_ARGS)

# The Node packages (tests/node's clients, the TypeScript contracts' generator and
# gRPC runtime), from the npm registry at the locked versions. Without npm the Node
# tests skip, except under CI, where they fail.
%/node_modules/.package-lock.json: %/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix $* --no-audit --no-fund; \
	else \
		echo "npm not found: the Node tests will be skipped"; \
	fi

run: install
	$(BIN)/keyhold serve

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .keyhold .pytest_cache .mypy_cache .ruff_cache dist build $(NODE_TESTS)/node_modules $(TS_CLIENT)/node_modules
