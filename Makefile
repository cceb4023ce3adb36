# One toolchain everywhere: the README, CI (.ci/run) and developers use these targets.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install demo test test-fast lint bench clean

install:  ## install Sigstream and its dev tools (fast when already installed)
	$(PIP) install -q -e '.[dev]'

demo: install  ## the main job: services up, replay real telemetry, detect, show findings
	sigstream demo

test: install  ## the whole suite: unit + integration + e2e (starts and stops the services)
	$(PYTHON) -m pytest -v

test-fast: install  ## unit tests only, no services (seconds)
	$(PYTHON) -m pytest -m "not integration and not e2e" -q

lint:
	$(PYTHON) -m ruff check .

clean:
	rm -rf .run build
