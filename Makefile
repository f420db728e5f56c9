# The documented workflow. Every CI step is one of these targets.
#   make demo   set up (venv, maturin, release build) and run the demo
#   make test   core cargo tests, pytest and CPython's own thread suites (conformance) on every interpreter 3.9-3.13 found
#   make lint   rustfmt check + clippy (-D warnings) for every interpreter's cfg
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHONS_CMD := scripts/pythons.sh

.PHONY: demo test test-rust test-python lint fmt build clean

demo:
	@set -- $$(scripts/default-python.sh); echo "== building rthread for Python $$1 ($$2)"; \
	 scripts/install.sh "$$1" "$$2"; \
	 .venv/$$1/bin/python examples/demo.py; \
	 echo; echo "== rthread vs the built-in _thread (python -m rthread bench --quick)"; \
	 .venv/$$1/bin/python -m rthread bench --quick

build:
	@$(PYTHONS_CMD) | while read -r v p; do echo "== build $$v"; scripts/install.sh "$$v" "$$p"; done

test: test-rust test-python conformance

test-rust:
	cargo test -p rthread-core
	@set -- $$(scripts/default-python.sh); PYO3_PYTHON=$$2 cargo test -p rthread-py --lib

test-python:
	@found=$$($(PYTHONS_CMD)); \
	 [ -n "$$found" ] || { echo "no CPython 3.9-3.13 found (pyenv or pythonX.Y on PATH)" >&2; exit 1; }; \
	 echo "interpreters found:"; echo "$$found" | sed 's/^/  /'; \
	 failed=""; \
	 while read -r v p; do \
	   echo "== Python $$v: build"; scripts/install.sh "$$v" "$$p"; \
	   echo "== Python $$v: pytest"; \
	   .venv/$$v/bin/python -m pytest -q -p no:cacheprovider || failed="$$failed $$v"; \
	 done <<< "$$found"; \
	 if [ -n "$$failed" ]; then echo "pytest failed on:$$failed" >&2; exit 1; fi

lint:
	cargo fmt --all -- --check
	@$(PYTHONS_CMD) | while read -r v p; do \
	   echo "== clippy for Python $$v"; \
	   PYO3_PYTHON=$$p CARGO_TARGET_DIR=target/lint$$v cargo clippy --all-targets -- -D warnings; \
	 done

fmt:
	cargo fmt --all

clean:
	rm -rf target .venv

# make bench   build and install for the default interpreter (as `make demo` does), then run
#              `python -m rthread bench`; pass options with BENCH_ARGS, e.g.
#              make bench BENCH_ARGS="--quick --chart bench-results/bench.png"
BENCH_ARGS ?=
.PHONY: bench
bench:
	@set -- $$(scripts/default-python.sh); echo "== building rthread for Python $$1 ($$2)"; \
	 scripts/install.sh "$$1" "$$2"; \
	 .venv/$$1/bin/python -m rthread bench $(BENCH_ARGS)

# make conformance   CPython's own test_thread, test_threading, test_threading_local,
#                    test_threadsignals and test_audit, from each interpreter's installed
#                    `test` package, on the built-in _thread and on rthread, compared test
#                    by test (scripts/conformance.py; differences allowed only with a reason
#                    in tests/cpython/expected_differences.py). Builds a stale wheel first.
#                    Options in CONFORMANCE_ARGS, e.g. "--versions 3.12,3.13 --fresh-baseline";
#                    RTHREAD_PYTHONS restricts the interpreters as for the other targets.
CONFORMANCE_ARGS ?=
.PHONY: conformance
conformance:
	@runner=$$($(PYTHONS_CMD) | tail -n1 | cut -d' ' -f2); \
	 [ -n "$$runner" ] || { echo "no CPython 3.9-3.13 found (pyenv or pythonX.Y on PATH)" >&2; exit 1; }; \
	 "$$runner" scripts/conformance.py $(CONFORMANCE_ARGS)
