# popek's entry points.  Each target works on a fresh machine: the first run
# creates .venv and installs the project with its dev extras; later runs
# reinstall only when pyproject.toml changes (the stamp file records it).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-slow verify bench

# The suite on two cores; tests marked slow (a wheel installed into a clean
# venv, the README's tour run as written, the multi-seed outsider checks: a
# minute or more each) are left to `make test-slow`, which CI runs after it.
# Three test processes on two cores: many tests wait (for a plug-in's time
# limit, a Redis or Dask server, a killed campaign), and a third process
# uses those cores meanwhile; worksteal keeps the long campaign tests from
# all landing at the end of one process's queue (12 min 22 s with -n 2,
# 10 min 10 s so, measured back to back on the loaded 2-core machine).
test: $(STAMP)
	$(PY) -m pytest -n 3 --dist worksteal -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -n 2 -q -m slow

# The main job: Z3 proofs for every profile, then a fuzzing campaign for
# every registered VMM on every profile it declares, ending in the verdict
# table (design x profile x fidelity/efficiency/safety, observed vs
# expected).  A case budget per cell: popek verify's default (700 cases,
# capped at 10 minutes), or VERIFY_CASES capped at VERIFY_CAP (make verify
# VERIFY_CASES=3000 VERIFY_CAP=20m).  The same cases and verdict however
# loaded the machine is, unless the cap cuts a cell short (then it says so).
# The report (report.json and a self-contained index.html) goes to
# VERIFY_REPORT, always the same place, and its paths are the last lines.
VERIFY_CASES ?=
VERIFY_CAP ?= 10m
VERIFY_REPORT ?= .popek/report
verify: $(STAMP)
	$(VENV)/bin/popek verify $(if $(VERIFY_CASES),--cases $(VERIFY_CASES) --time $(VERIFY_CAP)) --report $(VERIFY_REPORT)

bench: $(STAMP)
	$(PY) bench/run.py

# Long fuzzing campaigns: every registered VMM on every profile it declares,
# FUZZ_CASES each (make fuzz FUZZ_CASES=50000), each capped at FUZZ_TIME,
# ending in the verdict table.  FUZZ_CASES= (empty) makes FUZZ_TIME a time
# budget per cell instead (make fuzz FUZZ_CASES= FUZZ_TIME=30m).
FUZZ_CASES ?= 10000
FUZZ_TIME ?= 30m
.PHONY: fuzz
fuzz: $(STAMP)
	$(VENV)/bin/popek verify --no-proofs $(if $(FUZZ_CASES),--cases $(FUZZ_CASES)) --time $(FUZZ_TIME) --workers 2

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)
