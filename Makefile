# stallwatch: `make run` (demo on the DirectRunner) and `make test`.
# Both set themselves up: the virtualenv is .venv/ at the repo root.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

SCENARIO ?= demo
SEED     ?= 7
VIEWERS  ?=
WORKLOAD ?= out/workload
OUTPUT   ?= out/run
RUNNER   ?= direct

.PHONY: run test test-unit test-integration venv generate browser clean help \
	emulators emulators-up emulators-down prism

# Local protocol peers (tools/emulators.py): Google's pstest built from the Go
# module proxy, kinesis-mock from npm. Loopback only.
TOOLS        := .tools
PSTEST       := $(TOOLS)/bin/pstest
KINESIS_MOCK := $(TOOLS)/node_modules/kinesis-local/main.js
KINESIS_MOCK_VERSION := 0.6.2
# Prism, Beam's Go runner, at the apache-beam version pinned in setup.py.
BEAM_VERSION := $(shell sed -n 's/^BEAM_VERSION = "\(.*\)".*/\1/p' setup.py)
PRISM        := $(TOOLS)/bin/prism

help:
	@echo "make run    generate a workload and run the pipeline on the DirectRunner"
	@echo "make test   run every test (unit + integration, emulators included)"
	@echo "make emulators-up / emulators-down   Pub/Sub (pstest) and Kinesis (kinesis-mock) on loopback"
	@echo "variables: SCENARIO=$(SCENARIO) SEED=$(SEED) VIEWERS=$(VIEWERS) WORKLOAD=$(WORKLOAD) OUTPUT=$(OUTPUT)"

venv: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing stallwatch and its dependencies into $(VENV)/ (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 && \
	 $(BIN)/python -m pip install --quiet -e '.[test]' >> $(VENV)/install.log 2>&1 || \
	 { tail -20 $(VENV)/install.log; exit 1; }
	@touch $@

generate: venv
	@$(BIN)/stallwatch generate --out=$(WORKLOAD) --scenario=$(SCENARIO) --seed=$(SEED) \
		$(if $(VIEWERS),--viewers=$(VIEWERS))

run: generate
	@start=$$(date +%s); \
	$(BIN)/stallwatch run --source=$(WORKLOAD) --output=$(OUTPUT) \
		$$($(BIN)/python -m runners $(RUNNER)) && \
	$(BIN)/stallwatch score --output=$(OUTPUT) --truth=$(WORKLOAD)/truth.json && \
	$(BIN)/stallwatch report --output=$(OUTPUT) && \
	echo "make run: done in $$(( $$(date +%s) - start )) s; results in $(OUTPUT)/"

test: venv browser emulators prism
	$(BIN)/python -m pytest -q

emulators: $(PSTEST) $(KINESIS_MOCK)

$(PSTEST): tools/pstest/main.go tools/pstest/go.mod tools/pstest/go.sum
	@echo "building the Pub/Sub emulator (pstest) into $@"
	@cd tools/pstest && go build -o $(CURDIR)/$@ .

$(KINESIS_MOCK):
	@echo "installing the Kinesis emulator (kinesis-mock $(KINESIS_MOCK_VERSION)) into $(TOOLS)/"
	@mkdir -p $(TOOLS)
	@npm install --silent --no-audit --no-fund --prefix $(TOOLS) kinesis-local@$(KINESIS_MOCK_VERSION) >/dev/null
	@touch $@

prism: $(PRISM)

$(PRISM): setup.py
	@echo "building the Prism runner v$(BEAM_VERSION) with go install into $(TOOLS)/bin/"
	@GOBIN=$(CURDIR)/$(TOOLS)/bin go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)
	@touch $@

emulators-up: venv emulators
	@$(BIN)/python -m tools.emulators up

emulators-down: venv
	@$(BIN)/python -m tools.emulators down

# Debian's Chromium for the report's browser test (no browser download from elsewhere).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test-unit: venv
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: venv browser emulators prism
	$(BIN)/python -m pytest -q -m integration

clean:
	rm -rf out .pytest_cache build *.egg-info $(TOOLS)
