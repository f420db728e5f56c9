# The documented workflow. Every CI step is one of these targets.
#   make demo   set up (venv, maturin, release build) and run the demo
#   make test   core cargo tests, the short reliability tier (loom models, AddressSanitizer, valgrind
#               memcheck), pytest (with the short fuzz/storm/leak tiers) and CPython's own thread suites
#               (conformance) on every interpreter 3.9-3.15 found
#   make torture  the long reliability tier (scripts/torture.sh): loom at higher bounds, ASan+TSan,
#               memcheck on every interpreter, 100 000 fuzz steps and the full storms per interpreter
#   make test-sid  the same `make test` for CPython 3.14 and 3.15, inside a Debian sid chroot
#               (needs root; makes the chroot with mmdebstrap on first use, scripts/sid.sh)
#   make lint   rustfmt check + clippy (-D warnings) for every interpreter's cfg, 3.9-3.15,
#               rustdoc with broken intra-doc links as errors
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHONS_CMD := scripts/pythons.sh

.PHONY: demo test test-rust test-models test-python test-sid torture lint fmt build clean

demo:
	@set -- $$(scripts/default-python.sh); echo "== building rthread for Python $$1 ($$2)"; \
	 scripts/install.sh "$$1" "$$2"; \
	 .venv/$$1/bin/python examples/demo.py; \
	 echo; echo "== rthread vs the built-in _thread (python -m rthread bench --quick)"; \
	 .venv/$$1/bin/python -m rthread bench --quick

build:
	@$(PYTHONS_CMD) | while read -r v p; do echo "== build $$v"; scripts/install.sh "$$v" "$$p"; done

test: test-rust test-models test-python conformance

test-rust:
	cargo test -p rthread-core
	@set -- $$(scripts/default-python.sh); PYO3_PYTHON=$$2 cargo test -p rthread-py --lib

# The short reliability tier outside pytest: loom models of the core lock, RLock and event
# (every interleaving up to 2 preemptions), the core tests under AddressSanitizer, and a short
# pytest run of the extension under valgrind memcheck on the default interpreter.
test-models:
	scripts/loom.sh short
	scripts/sanitizers.sh short

# The long tier: see scripts/torture.sh (minutes to hours; TORTURE_STEPS selects steps).
torture:
	scripts/torture.sh

test-python:
	@found=$$($(PYTHONS_CMD)); \
	 [ -n "$$found" ] || { echo "no CPython 3.9-3.15 found (pyenv or pythonX.Y on PATH)" >&2; exit 1; }; \
	 echo "interpreters found:"; echo "$$found" | sed 's/^/  /'; \
	 failed=""; \
	 while read -r v p; do \
	   echo "== Python $$v: build"; scripts/install.sh "$$v" "$$p"; \
	   echo "== Python $$v: pytest"; \
	   mkdir -p target/test-logs; \
	   .venv/$$v/bin/python -m pytest -q -p no:cacheprovider -rfE 2>&1 | tee target/test-logs/pytest-$$v.log \
	     || failed="$$failed $$v"; \
	 done <<< "$$found"; \
	 if [ -n "$$failed" ]; then \
	   for v in $$failed; do echo "== Python $$v: failures (whole log: target/test-logs/pytest-$$v.log)" >&2; \
	     grep -E '^(FAILED|ERROR) ' target/test-logs/pytest-$$v.log | cut -c1-300 >&2 || true; done; \
	   echo "pytest failed on:$$failed" >&2; exit 1; \
	 fi

# CPython 3.14 and 3.15 usually live only in the sid chroot: clippy needs no interpreter,
# only PyO3's description of one, so a version not found here is linted from a PyO3
# config file (PYO3_CONFIG_FILE) that names it.
LINT_VERSIONS := 3.9 3.10 3.11 3.12 3.13 3.14 3.15
lint:
	cargo fmt --all -- --check
	@found=$$($(PYTHONS_CMD)); \
	 for v in $(LINT_VERSIONS); do \
	   p=$$(awk -v v="$$v" '$$1==v {print $$2}' <<< "$$found"); \
	   if [ -n "$$p" ]; then \
	     echo "== clippy for Python $$v ($$p)"; \
	     PYO3_PYTHON=$$p CARGO_TARGET_DIR=target/lint$$v cargo clippy --all-targets -- -D warnings; \
	   else \
	     cfg=$$PWD/target/pyo3-$$v.cfg; mkdir -p target; \
	     printf 'implementation=CPython\nversion=%s\nshared=true\nabi3=false\npointer_width=64\nbuild_flags=\nsuppress_build_script_link_lines=true\n' "$$v" > "$$cfg"; \
	     echo "== clippy for Python $$v (no interpreter here: PyO3 config $$cfg)"; \
	     PYO3_CONFIG_FILE=$$cfg CARGO_TARGET_DIR=target/lint$$v cargo clippy --all-targets -- -D warnings; \
	   fi; \
	 done
	@echo "== rustdoc (private items, broken links are errors)"
	RUSTDOCFLAGS="-D warnings" PYO3_PYTHON=python3 CARGO_TARGET_DIR=target/lint-doc \
	  cargo doc --no-deps --document-private-items --quiet

# CPython 3.14 and 3.15 from Debian sid: `make test` inside the chroot, restricted to them,
# failing unless both are there. Of the short reliability tier only memcheck runs there, on 3.14
# (the long tier covers both): loom and ASan test the pure-Rust core, covered on the host.
SID_VERSIONS := 3.14 3.15
test-sid:
	@scripts/sid.sh setup
	@scripts/sid.sh run bash -c 'found=$$(RTHREAD_PYTHONS="$(SID_VERSIONS)" scripts/pythons.sh | cut -d" " -f1 | xargs); \
	  [ "$$found" = "$(SID_VERSIONS)" ] || { echo "sid chroot: expected CPython $(SID_VERSIONS), found: $$found" >&2; exit 1; }; \
	  export CARGO_TARGET_DIR=target/sid RTHREAD_PYTHONS="$(SID_VERSIONS)"; \
	  make test-rust test-python conformance && \
	  scripts/sanitizers.sh memcheck 3.14 /usr/bin/python3.14'

fmt:
	cargo fmt --all

clean:
	rm -rf target .venv

# make bench   build and install for the default interpreter (as `make demo` does), and the
#              same code with the bookkeeping compiled out (scripts/nodiag.sh, the baseline of
#              the `bookkeeping_*` rows), then run `python -m rthread bench --nodiag ...`; pass
#              options with BENCH_ARGS, e.g.
#              make bench BENCH_ARGS="--quick --chart bench-results/bench.png"
BENCH_ARGS ?=
.PHONY: bench nodiag
bench:
	@set -- $$(scripts/default-python.sh); echo "== building rthread for Python $$1 ($$2)"; \
	 scripts/install.sh "$$1" "$$2"; scripts/nodiag.sh "$$1" "$$2"; \
	 .venv/$$1/bin/python -m rthread bench --nodiag target/nodiag/$$1 $(BENCH_ARGS)

# make nodiag  the no-diag baseline (scripts/nodiag.sh) for every interpreter found, into
#              target/nodiag/3.X, for `python -m rthread bench --nodiag target/nodiag/3.X`
nodiag:
	@$(PYTHONS_CMD) | while read -r v p; do echo "== no-diag build $$v"; scripts/nodiag.sh "$$v" "$$p"; done

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
	 [ -n "$$runner" ] || { echo "no CPython 3.9-3.15 found (pyenv or pythonX.Y on PATH)" >&2; exit 1; }; \
	 "$$runner" scripts/conformance.py $(CONFORMANCE_ARGS)
