# tinyc — make demo (set up a fresh machine and run the example), make test (the test suite).
# PYTHON makes the project's virtual environment (.venv); everything else runs in it.
PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARM_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm

.PHONY: setup setup-system setup-python setup-rp2040js venv demo test test-full firmware bench conformance clean \
        example-iris example-digits example-mnist example-mobilenetv2 distclean readme-ops

RP2040JS := tinyc/firmware/rp2040js

setup: setup-system setup-python setup-rp2040js

# Cross compiler, emulator, cmake, Node.js (for rp2040js): only installed when missing.
setup-system:
	@missing=""; \
	for c in arm-none-eabi-gcc:"$(ARM_PKGS)" qemu-system-arm:qemu-system-arm gcc:gcc cmake:cmake node:"nodejs npm" \
	         npm:npm; do \
	  command -v $${c%%:*} >/dev/null || missing="$$missing $${c#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

# The project's virtual environment, made from $(PYTHON) (PEP 668: Debian's and Ubuntu's python3 refuse `pip
# install` outside one). Made again when PYTHON names another interpreter; python3-venv is installed if missing.
venv:
	@want=$$($(PYTHON) -c 'import sys; print(sys.executable)') || { echo "error: $(PYTHON) not found; install \
	python3 or pass PYTHON=/path/to/python3" >&2; exit 1; }; \
	if [ ! -x $(VENV)/bin/python ] || [ "$$(cat $(VENV)/.base-python 2>/dev/null)" != "$$want" ]; then \
	  rm -rf $(VENV); \
	  echo "== creating $(VENV) with $$want"; \
	  if ! $(PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
	    echo "== installing python3-venv (venv's pip is missing)"; rm -rf $(VENV); \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv >/dev/null && \
	    $(PYTHON) -m venv $(VENV) || { echo "error: cannot create $(VENV) with $(PYTHON)" >&2; exit 1; }; \
	  fi; \
	  echo "$$want" > $(VENV)/.base-python; \
	fi

# tinyc (editable) and an extra's dependencies, installed into the venv when it or pyproject.toml is new.
define install_extra
	@stamp=$(VENV)/.installed-$(1); \
	if [ ! -f $$stamp ] || [ pyproject.toml -nt $$stamp ]; then \
	  echo "== installing tinyc and its $(1) dependencies into $(VENV)"; \
	  $(VPY) -m pip install -q -e ".[$(1)]" && touch $$stamp; \
	fi
endef

setup-python: venv
	$(call install_extra,test)

# rp2040js (npm) for `tinyc run --emulate --soc` and `make bench`, pinned by its package-lock.json; installed again when
# the lock changes.
setup-rp2040js: setup-system
	@if [ ! -f $(RP2040JS)/node_modules/.package-lock.json ] || \
	    [ $(RP2040JS)/package-lock.json -nt $(RP2040JS)/node_modules/.package-lock.json ]; then \
	  echo "== installing rp2040js (npm ci)"; \
	  npm ci --prefix $(RP2040JS) --no-audit --no-fund --loglevel=error; \
	fi

# The demo installs tinyc with what the demo needs only (no PyTorch), so a fresh machine is ready sooner.
demo: setup-system venv
	$(call install_extra,demo)
	@$(VPY) examples/demo.py

# The worked examples (README "Examples"); output in examples-out/.
example-iris: setup
	$(VPY) examples/iris.py
example-digits: setup
	$(VPY) examples/digits_cnn.py
example-mnist: setup
	$(VPY) examples/mnist_cnn_torch.py
example-mobilenetv2: setup
	$(VPY) examples/mobilenetv2_pico2.py

# The suite runs in TEST_JOBS processes (pytest-xdist), each test file whole in one of them (--dist loadfile: a
# file's cached models are built once); at most 4 by default, since each process may hold TensorFlow and torch.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST    := $(VPY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile

test: setup
	$(PYTEST) tests

# Firmware for every board: the test models (MLP, depthwise CNN, residual CNN; float and int8) compiled and built
# into every image (ELF, UF2, .bin, .hex), checked structurally. Part of `make test` too.
firmware: setup
	$(VPY) -m pytest -q -p no:cacheprovider tests/firmware/test_firmware_matrix.py

# The longer sweep (more random samples, more hypothesis examples).
test-full: setup
	TINYC_FULL=1 $(PYTEST) tests

# Speed: instructions per inference of the MLPerf Tiny models and MobileNetV2 on M0+/M4/M7/M33 under QEMU, against
# TFLite Micro + CMSIS-NN, and RP2040 cycles of the Pico's board image on rp2040js (--soc); writes bench/RESULTS.md.
# `bench/speed.py --help` for subsets (--models, --cores, --quick). Then the depth-first fused blocks against the
# layer-by-layer plans (arena, M4 and M0+ instructions), appended to bench/RESULTS.md.
bench: setup
	$(VPY) bench/speed.py --soc
	$(VPY) bench/depth_first.py --append bench/RESULTS.md

# README.md's op list, regenerated from `tinyc ops` (tests/test_readme_ops.py fails when they differ).
readme-ops: setup
	$(VPY) -m tinyc.op_list README.md

# ONNX's backend test suite (every node, pytorch-converted and pytorch-operator case of the installed onnx) through
# tinyc's ONNX backend: per op type the cases passing, then refusals by reason, wrong results and crashes; per-case
# results in build/onnx_conformance.json. `bench/onnx_conformance.py --help` for subsets (--ops, --kinds, --jobs).
conformance: setup
	@mkdir -p build
	$(VPY) bench/onnx_conformance.py --json build/onnx_conformance.json

clean:
	rm -rf build dist *.egg-info demo-out examples-out .pytest_cache .hypothesis

# Also the virtual environment (the next make builds it again).
distclean: clean
	rm -rf $(VENV) $(RP2040JS)/node_modules
