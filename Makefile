# popek's entry points.  Each target works on a fresh machine: the first run
# creates .venv and installs the project with its dev extras; later runs
# reinstall only when pyproject.toml changes (the stamp file records it).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test verify bench

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

# The main job: Z3 proofs for every profile, then a fuzzing campaign for
# every registered VMM on every profile it declares, ending in the verdict
# table (design x profile, observed vs expected).  VERIFY_TIME per cell.
VERIFY_TIME ?= 20s
verify: $(STAMP)
	$(VENV)/bin/popek verify --time $(VERIFY_TIME)

bench: $(STAMP)
	$(PY) bench/run.py

# Long fuzzing campaigns: every registered VMM on every profile it declares,
# FUZZ_TIME each (make fuzz FUZZ_TIME=30m), ending in the verdict table.
FUZZ_TIME ?= 2m
.PHONY: fuzz
fuzz: $(STAMP)
	$(VENV)/bin/popek verify --no-proofs --time $(FUZZ_TIME) --workers 2

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)
