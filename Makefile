# caudal — two entry points: `make local` (run the whole pipeline on this machine) and
# `make test` (everything CI checks). Both install what is missing first (scripts/ensure-tools.sh).
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CACHE ?= $(HOME)/.cache/caudal
# One target dir for every build (cargo, cargo-lambda, sam build) keeps rebuilds incremental.
export CARGO_TARGET_DIR ?= $(CACHE)/target
# Python tool venvs, keyed by the hash of their requirements file (a fresh machine fills them).
VENV ?= $(CACHE)/venv-$(shell sha256sum requirements-dev.txt | cut -c1-12)
CHECKOV_VENV ?= $(CACHE)/venv-checkov-$(shell sha256sum requirements-checkov.txt | cut -c1-12)
export VENV CHECKOV_VENV
export PATH := $(VENV)/bin:$(PATH)
export MOTO_SERVER := $(VENV)/bin/moto_server
export CHECKOV := $(CHECKOV_VENV)/bin/checkov
export AWS_DEFAULT_REGION ?= us-east-1
export AWS_EC2_METADATA_DISABLED := true
# Tests are quiet unless TEST_LOG is set.
export RUST_LOG ?= warn

.PHONY: help tools local test fmt lint unit infra smoke bench clean-local

help:
	@echo "make local   run the whole pipeline locally (moto + PostgreSQL + the three functions)"
	@echo "make test    formatting, clippy, every test, template checks, deploy-artifact smoke test"
	@echo "make bench   benchmarks (release builds)"

tools:
	@scripts/ensure-tools.sh

local: tools
	cargo run -p caudal-local -- up

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

unit:
	cargo test --workspace --no-fail-fast

infra:
	scripts/lint-infra.sh

smoke:
	scripts/ingest-watch-test.sh
	scripts/smoke-artifacts.sh

test: tools fmt lint unit infra smoke
	@echo "make test: all checks passed"

# criterion benchmarks; each prints its figures against their targets and writes them to
# cost/measured.yaml, and the cost table in docs/COST.md is computed again from them.
bench:
	cargo build --release -p ingest-api -p raw-writer -p rules-loader --bins
	cargo bench -p testkit --bench startup
	cargo bench -p ingest-api --bench ingest_core
	cargo bench -p raw-writer --bench encode
	cargo bench -p rules --bench rules
	cargo bench -p rules-loader --bench stage
	cargo bench -p rules-loader --bench dedupe
	cargo run -q -p caudal -- cost --update docs/COST.md

clean-local:
	cargo run -p caudal-local -- reset
