# The two set-up commands of the README work on a fresh machine:
#   make demo   -- create .venv, install, generate code, run the shop example and drive it
#   make test   -- install everything and run the whole suite (ruff, mypy --strict, pytest)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

export PATH := $(BIN):$(PATH)
export PYTHONPATH := $(CURDIR)/gen/python:$(CURDIR)
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install gen lint typecheck services services-stop browser test test-unit test-integration demo bench docker clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Python messages + .pyi (protoc builtins via grpcio-tools) and gRPC stubs
# (wirebus' protoc-gen-grpc_python), all offline.  gen/ is not committed.
gen: install
	buf generate
	buf generate --template buf.gen.betterproto.yaml

lint: gen
	buf lint
	ruff check $(wildcard src tests examples bench)

typecheck: install
	mypy src

# A real Kafka (KRaft, jars from Maven Central) and PostgreSQL (Debian), on 127.0.0.1.
services:
	scripts/services start

services-stop:
	scripts/services stop

# Headless Chromium (Debian's package) for tests/browser; best effort: without it
# (no root, no apt) the browser test skips with one line.
browser:
	@tests/browser/install-chromium || echo "headless Chromium not installed: tests/browser will skip"

test: gen lint typecheck services browser
	eval "$$(scripts/services env)" && pytest

test-integration: gen services
	eval "$$(scripts/services env)" && pytest tests/integration

test-unit: gen
	pytest tests/unit -q

demo: gen
	python -m examples.shop.demo

bench: gen
	python bench/run_all.py

docker:
	docker build -t wirebus-shop .

clean:
	rm -rf $(VENV) gen .mypy_cache .ruff_cache .pytest_cache
