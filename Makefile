# The README's two commands. Each does all the set-up on a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# On a machine without a CUDA GPU the CPU build of torch goes in first, so nothing pulls the CUDA one.
TORCH  ?= torch==2.13.0

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then echo "CUDA GPU found: torch from the default index"; \
	 else $(PY) -m pip install -q "$(TORCH)"; fi
	$(PY) -m pip install -q -e ".[test,ray]"
	touch $(STAMP)

demo: $(STAMP)
	bash samples/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
