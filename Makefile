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

.PHONY: run test check test-unit test-integration mutate venv generate browser clean help bench bench-stream \
	emulators emulators-up emulators-down prism flink flink-jobserver flink-dist flink-up flink-down template

# Local protocol peers (tools/emulators.py): Google's pstest built from the Go
# module proxy, kinesis-mock from npm. Loopback only.
TOOLS        := .tools
PSTEST       := $(TOOLS)/bin/pstest
KINESIS_MOCK := $(TOOLS)/node_modules/kinesis-local/main.js
KINESIS_MOCK_VERSION := 0.6.2
# Prism, Beam's Go runner, at the apache-beam version pinned in setup.py
# (tools/prism/go.mod pins the same module version, go.sum its hashes).
BEAM_VERSION := $(shell sed -n 's/^BEAM_VERSION = "\(.*\)".*/\1/p' setup.py)
PRISM        := $(TOOLS)/bin/prism
# Flink: the Beam job server shaded by Maven from the runner library
# (tools/flink/pom.xml), and a Flink distribution for a standalone cluster
# unpacked from the PyPI apache-flink + apache-flink-libraries packages.
FLINK_MINOR   := 1.19
FLINK_VERSION := 1.19.3
FLINK_JAR     := $(TOOLS)/jars/beam-runners-flink-$(FLINK_MINOR)-job-server-$(BEAM_VERSION).jar
FLINK_HOME    := $(TOOLS)/flink-$(FLINK_VERSION)

help:
	@echo "make run    generate a workload and run the pipeline on the DirectRunner"
	@echo "make test   run every test: unit, integration and e2e (emulators, Flink, Prism, Chromium)"
	@echo "make check  the offline unit tests only (tests/unit/, about 2 minutes)"
	@echo "make emulators-up / emulators-down   Pub/Sub (pstest) and Kinesis (kinesis-mock) on loopback"
	@echo "make prism / flink   build Prism; the Flink job server jar + a Flink distribution (.tools/)"
	@echo "make flink-up / flink-down   a standalone Flink cluster (JobManager + 2 TaskManagers) on loopback"
	@echo "make bench  throughput vs the DuckDB reference (BENCH_SIZE=100k,1m|5m) -> docs/benchmarks.md"
	@echo "make mutate  break the code on purpose (tools/mutate.py): each mutation must fail a test"
	@echo "make bench-stream  alert latency + memory under load (STREAM_SOURCE=pubsub|kinesis STREAM_RUNNER=direct|flink)"
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
		--preset=$(RUNNER) && \
	$(BIN)/stallwatch score --output=$(OUTPUT) --truth=$(WORKLOAD)/truth.json && \
	$(BIN)/stallwatch report --output=$(OUTPUT) && \
	echo "make run: done in $$(( $$(date +%s) - start )) s; results in $(OUTPUT)/"

test: venv browser e2e-tools emulators prism flink
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

$(PRISM): setup.py tools/prism/go.mod tools/prism/go.sum
	@grep -q "github.com/apache/beam/sdks/v2 v$(BEAM_VERSION) " tools/prism/go.mod || \
	  { echo "tools/prism/go.mod does not pin Beam v$(BEAM_VERSION) (setup.py): update it"; exit 1; }
	@echo "building the Prism runner v$(BEAM_VERSION) into $(TOOLS)/bin/"
	@cd tools/prism && go build -o $(CURDIR)/$@ github.com/apache/beam/sdks/v2/go/cmd/prism
	@touch $@

flink: flink-jobserver flink-dist

flink-jobserver: $(FLINK_JAR)

$(FLINK_JAR): setup.py tools/flink/pom.xml
	@command -v mvn >/dev/null && command -v java >/dev/null || \
	  { echo "make flink-jobserver needs mvn and java 17 (apt-get install maven openjdk-17-jdk)"; exit 1; }
	@echo "building the Beam $(BEAM_VERSION) Flink $(FLINK_MINOR) job server with mvn into $@"
	@mkdir -p $(dir $@)
	@mvn -q -B -f tools/flink/pom.xml -Dbeam.version=$(BEAM_VERSION) -Dflink.minor=$(FLINK_MINOR) \
	  -Dbuild.dir=$(CURDIR)/$(TOOLS)/build/flink-job-server package
	@cp $(TOOLS)/build/flink-job-server/job-server.jar $@

flink-dist: $(FLINK_HOME)/bin/start-cluster.sh

$(FLINK_HOME)/bin/start-cluster.sh: | $(STAMP)
	@echo "unpacking Flink $(FLINK_VERSION) from PyPI (apache-flink, apache-flink-libraries) into $(FLINK_HOME)/"
	@$(BIN)/python -m pip download --quiet --no-deps -d $(TOOLS)/downloads \
	  apache-flink==$(FLINK_VERSION) apache-flink-libraries==$(FLINK_VERSION)
	@$(BIN)/python -m tools.flink unpack --version=$(FLINK_VERSION) --downloads=$(TOOLS)/downloads

flink-up: venv flink
	@$(BIN)/python -m tools.flink up

flink-down: venv
	@$(BIN)/python -m tools.flink down

emulators-up: venv emulators
	@$(BIN)/python -m tools.emulators up

emulators-down: venv
	@$(BIN)/python -m tools.emulators down

# Debian's Chromium for the report's browser test (no browser download from elsewhere).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Tools for the real-browser end-to-end test (tests/e2e/): Debian's ffmpeg
# (synthetic VOD) and the stock web players from npm, served to Chromium from
# $(PLAYERS)/node_modules.
HLSJS_VERSION  := 1.7.4
DASHJS_VERSION := 5.2.1
SHAKA_VERSION  := 5.2.12
PLAYER_PKGS    := hls.js@$(HLSJS_VERSION) dashjs@$(DASHJS_VERSION) shaka-player@$(SHAKA_VERSION)
PLAYERS        := $(TOOLS)/players
PLAYERS_STAMP  := $(PLAYERS)/.installed-$(HLSJS_VERSION)-$(DASHJS_VERSION)-$(SHAKA_VERSION)

.PHONY: e2e-tools
e2e-tools: $(PLAYERS_STAMP)
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  echo "installing Debian's ffmpeg for the end-to-end test media"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; }

$(PLAYERS_STAMP):
	@echo "installing the web players ($(PLAYER_PKGS)) into $(PLAYERS)/"
	@mkdir -p $(PLAYERS)
	@npm install --silent --no-audit --no-fund --prefix $(PLAYERS) $(PLAYER_PKGS) >/dev/null
	@touch $@

# Batch throughput against the DuckDB reference (bench/run.py): BENCH_SIZE=100k,1m (default),
# 5m opt-in; BENCH_RUNNERS=direct-1,direct-2,prism,flink-1,flink-2 (default per size);
# BENCH_MERGE=1 keeps the other sizes' rows of the last run.
# Writes the tables of docs/benchmarks.md.
BENCH_SIZE    ?= 100k,1m
BENCH_RUNNERS ?=
bench: venv prism flink
	$(BIN)/python -m bench.run --sizes=$(BENCH_SIZE) $(if $(BENCH_RUNNERS),--runners=$(BENCH_RUNNERS)) \
		$(if $(BENCH_MERGE),--merge) --write-doc

# Streaming benchmark (bench/stream.py): the soak audience published in real time into the
# emulator at STREAM_RATE events/s for STREAM_MINUTES; alert latency, memory by minute, drain.
STREAM_SOURCE  ?= pubsub
STREAM_RUNNER  ?= direct
STREAM_MINUTES ?= 10
STREAM_RATE    ?= 2000
STREAM_PARALLELISM ?= 2
STREAM_STATE ?= rocksdb
bench-stream: venv emulators $(if $(filter flink,$(STREAM_RUNNER)),flink)
	$(BIN)/python -m bench.stream --source=$(STREAM_SOURCE) --runner=$(STREAM_RUNNER) \
		--parallelism=$(STREAM_PARALLELISM) --minutes=$(STREAM_MINUTES) --rate=$(STREAM_RATE) \
		--state_backend=$(STREAM_STATE) --write-doc

# The offline unit tests (tests/unit/, no emulator, cluster or browser).
check: venv
	$(BIN)/python -m pytest -q tests/unit

test-unit: check

mutate: venv
	$(BIN)/python -m tools.mutate

test-integration: venv browser e2e-tools emulators prism flink
	$(BIN)/python -m pytest -q -m integration

# Dataflow Flex Template (not runnable here: needs a GCP project, Docker or
# Cloud Build). Prints the commands with PROJECT / REGION / BUCKET / REPO filled in.
PROJECT ?= my-project
REGION  ?= us-central1
BUCKET  ?= $(PROJECT)-stallwatch
REPO    ?= $(REGION)-docker.pkg.dev/$(PROJECT)/stallwatch
IMAGE   := $(REPO)/stallwatch:$(BEAM_VERSION)
template:
	@echo "# 1. build and push the image (on a machine with Docker; context = this repository)"
	@echo "docker build -f runners/dataflow/Dockerfile -t $(IMAGE) . && docker push $(IMAGE)"
	@echo "# 2. the template spec (metadata.json: every parameter stallwatch run takes on Dataflow)"
	@echo "gcloud dataflow flex-template build gs://$(BUCKET)/templates/stallwatch.json \\"
	@echo "  --image=$(IMAGE) --sdk-language=PYTHON --metadata-file=runners/dataflow/metadata.json"
	@echo "# 3. run it: streaming from Pub/Sub, alerts to Pub/Sub, views to BigQuery"
	@echo "gcloud dataflow flex-template run stallwatch-\$$(date +%Y%m%d-%H%M%S) \\"
	@echo "  --project=$(PROJECT) --region=$(REGION) \\"
	@echo "  --template-file-gcs-location=gs://$(BUCKET)/templates/stallwatch.json \\"
	@echo "  --additional-experiments=use_runner_v2 \\"
	@echo "  --parameters=sdk_container_image=$(IMAGE),streaming=true \\"
	@echo "  --parameters=source=pubsub://projects/$(PROJECT)/subscriptions/beacons \\"
	@echo "  --parameters=output=gs://$(BUCKET)/out,alerts=pubsub://projects/$(PROJECT)/topics/alerts \\"
	@echo "  --parameters=views_table=$(PROJECT):qoe.views,metrics_table=$(PROJECT):qoe.metrics"
	@echo "# Offline check of the same job (what tests/unit/test_dataflow.py runs):"
	@echo "$(BIN)/stallwatch run --runner=DataflowRunner --dry_run=True --no_auth --project=$(PROJECT) \\"
	@echo "  --region=$(REGION) --temp_location=gs://$(BUCKET)/tmp --sdk_location=container --streaming \\"
	@echo "  --source=pubsub://projects/$(PROJECT)/subscriptions/beacons --output=gs://$(BUCKET)/out"

clean:
	rm -rf out .pytest_cache build *.egg-info $(TOOLS)
