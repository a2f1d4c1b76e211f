# The two commands a new user runs: `make demo` and `make test`. Each sets up .venv by itself.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck imports proto proto-check bench bench-tracking bench-images bench-agent bench-fleet bench-fpga clean FORCE

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "edgewise needs Python 3.11 or newer"'
	@$(PYTHON) -m venv $(VENV) || { echo "python venv support is missing: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[all]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest tests

check: lint typecheck imports proto-check

lint: $(STAMP)
	$(BIN)/ruff check .

# The top-level folders become edgewise.* through package-dir; mypy and import-linter read source trees,
# so they get a tree shaped like the installed package: symlinks for mypy, a copy for import-linter.
PACKAGES := proto runtime cloud fpga simulators
$(VENV)/srcmap: $(STAMP) FORCE
	@rm -rf $@ && mkdir -p $@/edgewise
	@for f in edgewise/*.py; do ln -s "$(CURDIR)/$$f" $@/edgewise/; done
	@for d in $(PACKAGES); do ln -s "$(CURDIR)/$$d" $@/edgewise/$$d; done

typecheck: $(VENV)/srcmap
	MYPYPATH=$(VENV)/srcmap $(BIN)/mypy -p edgewise

imports: $(VENV)/srcmap
	@rm -rf $(VENV)/importmap && cp -rL $(VENV)/srcmap $(VENV)/importmap
	cd $(VENV)/importmap && $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml

FORCE:

proto: $(STAMP)
	$(BIN)/python proto/generate.py

proto-check: $(STAMP)
	$(BIN)/python proto/generate.py --check

bench: $(STAMP)
	$(BIN)/python bench/scoring.py

bench-tracking: $(STAMP)
	$(BIN)/python bench/tracking.py

bench-images: $(STAMP)
	$(BIN)/python bench/images.py

bench-agent: $(STAMP)
	$(BIN)/python bench/agent.py

bench-fleet: $(STAMP)
	$(BIN)/python bench/fleet.py

bench-fpga: $(STAMP)
	$(BIN)/python bench/fpga.py

clean:
	rm -rf $(VENV) .demo .bench .pytest_cache .mypy_cache .ruff_cache
