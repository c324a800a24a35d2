# Entry points the README names. PYTHON may point at a venv's interpreter.
PYTHON ?= python3

# Debian packages the tests and benches drive: mosquitto_pub/sub (MQTT clients written in
# C), mosquitto (the reference broker of bench/bench_mqtt.py), openssl (TLS test
# certificates), wrk (bench/bench_http.py), nghttp2-client (h2load: bench/bench_grpc.py),
# systemd (systemd-analyze checks the shipped units).
DEBIAN_PACKAGES = mosquitto mosquitto-clients openssl wrk nghttp2-client systemd

.PHONY: install install-test system-deps compile example test bench clean arm-wheels arm-test

install:
	$(PYTHON) -m pip install --upgrade .

install-test: system-deps
	$(PYTHON) -m pip install --upgrade ".[test]"

# Installs only what is missing; needs root (or sudo) only then.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then echo "install these Debian packages:$$missing" >&2; exit 1; fi; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "apt-get install$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi

# In-place build for working on ext/ from a source checkout (PYTHONPATH=src).
compile:
	$(PYTHON) -m pip install --quiet --upgrade "setuptools>=77" "Cython>=3,<4"
	$(PYTHON) setup.py build_ext --inplace

example: install
	cd examples/hello && pillion run --app-id orders --app-port 3000 --dapr-http-port 3500 -- $(PYTHON) app.py

# The whole suite against the installed package (compiled core), then the unit and
# parity tests again with the pure-Python twins forced.
test: install-test
	$(PYTHON) -m pytest -q
	PILLION_NO_EXTENSIONS=1 $(PYTHON) -m pytest -q tests/unit tests/parity tests/test_extensions_loaded.py

bench: install
	$(PYTHON) bench/bench_http.py

clean:
	rm -rf build dist src/*.egg-info ext/*.c ext/*.html src/pillion/_ext/*.so

# manylinux aarch64 + x86_64 wheels in dist/ (cross-compiled, no emulation) and the aarch64
# wheel's smoke test under qemu. Needs root (apt, debootstrap); not part of CI. See arm/README.md.
arm-wheels:
	arm/build-wheels.sh

arm-test:
	arm/test-wheel-arm64.sh
