# tinyc — make demo (set up a fresh machine and run the example), make test (the test suite).
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
ARM_PKGS := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm

.PHONY: setup setup-system setup-python demo test test-full firmware bench clean \
        example-iris example-digits example-mnist example-mobilenetv2

setup: setup-system setup-python

# Cross compiler and emulator: only installed when missing.
setup-system:
	@if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null || ! command -v gcc >/dev/null; then \
	  echo "== installing $(ARM_PKGS) gcc"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gcc $(ARM_PKGS) >/dev/null; \
	fi

setup-python:
	@echo "== installing tinyc and its test dependencies"
	@$(PIP) install -q -e ".[test]"

# The demo installs tinyc with what the demo needs only (no PyTorch), so a fresh machine is ready sooner.
demo: setup-system
	@echo "== installing tinyc and the demo's dependencies"
	@$(PIP) install -q -e ".[demo]"
	@$(PYTHON) examples/demo.py

# The worked examples (README "Examples"); output in examples-out/.
example-iris: setup
	$(PYTHON) examples/iris.py
example-digits: setup
	$(PYTHON) examples/digits_cnn.py
example-mnist: setup
	$(PYTHON) examples/mnist_cnn_torch.py
example-mobilenetv2: setup
	$(PYTHON) examples/mobilenetv2_pico2.py

test: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

# Firmware for every board: the test models (MLP, depthwise CNN, residual CNN; float and int8) compiled and built
# into every image (ELF, UF2, .bin, .hex), checked structurally. Part of `make test` too.
firmware: setup
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/firmware/test_firmware_matrix.py

# The longer sweep (more random samples, more hypothesis examples).
test-full: setup
	TINYC_FULL=1 $(PYTHON) -m pytest -q -p no:cacheprovider tests

# Speed: instructions per inference of the MLPerf Tiny models and MobileNetV2 on M0+/M4/M7/M33 under QEMU, against
# TFLite Micro + CMSIS-NN; writes bench/RESULTS.md. about 1 min on 2 idle cores, several when shared;
# `bench/speed.py --help` for subsets (--models, --cores, --quick).
bench: setup
	$(PYTHON) bench/speed.py

clean:
	rm -rf build dist *.egg-info demo-out examples-out .pytest_cache .hypothesis
