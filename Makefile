# Everything goes through the project's own virtual environment; nothing is assumed but python3 and cc.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMOL := models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all venv bytecode compile models demo test bench lint clean

all: venv

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# An editable install leaves our modules uncompiled, and with PYTHONDONTWRITEBYTECODE set (as on these
# machines) every command would compile them again: ~0.05 s of each run. Compiled as pip does for wheels.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q ggufq kernels

venv: $(STAMP)

# Every numba kernel compiled for this CPU and cached, one line per group, so that no command compiles
# later (the first run of a command on a new CPU or after an edit would, and says so on stderr).
compile: models bytecode
	$(BIN)/python -m ggufq.runtime.warmup

models: $(STAMP)
	$(BIN)/python models/fetch.py
	$(BIN)/python models/fetch_vocabs.py

demo: compile
	$(BIN)/python tools/demo.py

test: compile
	$(BIN)/python -m pytest -q --durations=20 tests

bench: compile
	$(BIN)/python tools/bench_convert.py
	$(BIN)/python tools/bench_quantize.py
	$(BIN)/python tools/bench_runtime.py
	$(BIN)/python tools/bench_perplexity.py
	$(BIN)/python tools/bench_imatrix.py

lint: $(STAMP)
	$(BIN)/python -m compileall -q ggufq kernels tools tests

clean:
	rm -rf $(VENV) build *.egg-info
