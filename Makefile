# Two commands for a newcomer, each doing the set-up it needs itself:
#
#   make demo    the tiny-model demo (bash run.sh in the project's environment)
#   make test    the whole test suite
#
# Why make over venv + pip, not uv or poetry: pip is the tool that comes with Python, venv needs
# nothing else, and pip takes torch from the pin in requirements.txt (the CPU build on a CPU
# machine where a wheel lies on disk) where uv and poetry would download a CUDA build of several
# GB. `make` re-runs the install only when a requirements file changed (the stamp below), so both
# commands start at once when everything is in place. A .venv it did not make (yours) is never
# installed into. Users who manage their own environment (a GPU
# cluster) keep `pip install -r requirements.txt` and `bash run.sh` (README, "Your own environment").
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
BIN := $(abspath $(VENV))/bin
# vLLM's own environment, beside the project's: vLLM 0.33 pins torch and transformers versions this
# project's requirements contradict, so the vLLM plugin is tested in an environment of vLLM's
# versions (requirements-vllm.txt says which and why), as users run it.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# llama.cpp's bindings, built from source (6 min on 2 cores, once per machine: pip keeps the wheel):
# for the tests only, so `make demo` never waits for them.
LLAMACPP_STAMP := $(VENV)/.llamacpp
LLAMACPP_CMAKE := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF

.PHONY: demo test setup vllm-env llama-server
demo: $(STAMP)
	PATH="$(BIN):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))" bash run.sh

# Two workers: most of the suite's time is scripts starting (importing torch and transformers takes
# ~8 s), which one core leaves the other idle for (17.5 -> 13.2 min on 2 cores). PYTEST_ARGS adds
# options, for example PYTEST_ARGS='-m "not slow"'.
test: $(STAMP) $(VLLM_STAMP) $(LLAMACPP_STAMP) artifacts/llama-server
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

setup: $(STAMP)

vllm-env: $(VLLM_STAMP)

$(LLAMACPP_STAMP): requirements-llamacpp.txt $(STAMP)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-llamacpp.txt
	@touch $@

# llama.cpp's own OpenAI server (tests/export/test_llamacpp.py renders the chat template with its C++
# Jinja engine; benchmarks/server_load.py --peer llama-server): built from the llama.cpp that the
# llama-cpp-python source package of requirements-llamacpp.txt bundles (the llama.cpp the bindings
# are), about 5 min on 2 cores, once per machine: kept in ~/.cache as pip keeps its wheel, linked
# from artifacts/llama-server. No web UI (it would be fetched from the hub).
LLAMACPP_VERSION := $(shell grep -o '^llama-cpp-python==[^ ]*' requirements-llamacpp.txt | cut -d= -f3)
LLAMA_SERVER_CACHE := $(HOME)/.cache/fcmistral/llama.cpp-$(LLAMACPP_VERSION)
LLAMA_SERVER_BIN := $(LLAMA_SERVER_CACHE)/build/bin/llama-server
llama-server: artifacts/llama-server

artifacts/llama-server: $(LLAMA_SERVER_BIN)
	@mkdir -p artifacts && ln -sfn $(LLAMA_SERVER_BIN) $@

$(LLAMA_SERVER_BIN):
	rm -rf $(LLAMA_SERVER_CACHE) && mkdir -p $(LLAMA_SERVER_CACHE)
	$(PYTHON) -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d $(LLAMA_SERVER_CACHE) \
		llama-cpp-python==$(LLAMACPP_VERSION)
	tar -xzf $(LLAMA_SERVER_CACHE)/llama_cpp_python-*.tar.gz -C $(LLAMA_SERVER_CACHE) --strip-components=3 \
		--wildcards '*/vendor/llama.cpp/*'
	cmake -S $(LLAMA_SERVER_CACHE) -B $(LLAMA_SERVER_CACHE)/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
		-DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
	cmake --build $(LLAMA_SERVER_CACHE)/build --target llama-server -j $$(nproc) >/dev/null

$(VLLM_STAMP): requirements-vllm.txt
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-vllm.txt
	@touch $@

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "error: $(PYTHON) is older than Python 3.10: run make PYTHON=python3.11"; exit 2; }
	@if [ -e $(VENV) ] && [ ! -e $(VENV)/.made-by-make ]; then \
		echo "error: $(VENV) exists and was not made here: it is left alone (make VENV=.venv-fcmistral ...)"; exit 2; fi
	@test -x $(BIN)/python || { $(PYTHON) -m venv $(VENV) && touch $(VENV)/.made-by-make; } || \
		{ echo "error: no venv module: apt-get install python3-venv"; exit 2; }
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@touch $@
