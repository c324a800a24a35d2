# Entry points the README names. PYTHON may point at a venv's interpreter.
PYTHON ?= python3

.PHONY: install install-test compile example test bench clean

install:
	$(PYTHON) -m pip install --upgrade .

install-test:
	$(PYTHON) -m pip install --upgrade ".[test]"

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
