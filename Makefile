# The two commands of the README: `make run` (the whole pipeline locally) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WHEELS_STAMP := .cache/lambda-wheels/.fetched

.PHONY: install lambda-wheels run dashboard browser test lint format synth stop benchmark clean

# What the functions carry is installed first, exactly as pinned and hash-checked (constraints-lambda.txt, which
# lists the whole closure: --no-deps); the rest is then held to those versions by the same list without its hashes
# (pip would otherwise demand hashes for every other requirement too).
$(STAMP): requirements.txt requirements-dev.txt constraints-lambda.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps --require-hashes -r constraints-lambda.txt
	sed -e '/--hash=/d' -e 's/ *\\$$//' constraints-lambda.txt > $(VENV)/lambda-versions.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt -c $(VENV)/lambda-versions.txt
	touch $(STAMP)

install: $(STAMP) $(WHEELS_STAMP)

## Every wheel the Lambda functions carry, for the Lambda platform, hash-checked (constraints-lambda.txt); the synth unpacks them offline
lambda-wheels: $(STAMP)
	$(PY) -m cdk.wheels
	@mkdir -p $(dir $(WHEELS_STAMP)) && touch $(WHEELS_STAMP)

$(WHEELS_STAMP): $(STAMP) constraints-lambda.txt cdk/functions.py cdk/wheels.py
	$(PY) -m cdk.wheels
	@mkdir -p $(dir $(WHEELS_STAMP)) && touch $(WHEELS_STAMP)

## Run the pipeline once on the embedded PostgreSQL (seeded on first use); state persists in .local/
run: install
	@TOTESYS_VIA_MAKE=1 $(PY) -m statemachine.local run $(ARGS)

## The dashboard of the local warehouse (after `make run`): a self-contained page in .local/, path printed
dashboard: install
	$(PY) -m analytics.dashboard $(ARGS)

## The headless Chromium of the dashboard's browser test, from the distribution, when missing and we are root
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Chromium (apt-get) for the dashboard's browser test …"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "Could not install Chromium; the browser test will say so."; \
	else echo "No Chromium and not root: the dashboard's browser test will be skipped (it fails under CI=true)."; fi

## Lint, then every test (real PostgreSQL, moto for AWS)
test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 --dist loadfile

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

## Synthesize the CDK app with the cdk CLI (offline; cdk-nag runs as part of it); CA_BUNDLE: docs/deploy.md
CA_BUNDLE ?= runtime
synth: install node_modules/.package-lock.json
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npx cdk synth --quiet -c database_ca_bundle=$(CA_BUNDLE)

## Throughput against the COPY floor on generated totesys (1M sales orders; ARGS="--sales-orders 100000" is quick)
benchmark: install
	$(PY) -m benchmarks.throughput $(ARGS)

## Stop the embedded PostgreSQL that `make run` leaves running for queries
stop: install
	TOTESYS_VIA_MAKE=1 $(PY) -m statemachine.local stop $(ARGS)

clean:
	rm -rf .local cdk.out
