# Sastre: `make run` serves the app on http://127.0.0.1:8000, `make test` runs every test.
# Both set themselves up from nothing: a virtualenv in .venv, the project and its dev extra.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Ray 2.60's GCS and raylet listen on all interfaces whatever the node IP, so tests run in a
# private network namespace that has only loopback, where the machine allows one.
ISOLATE := $(shell unshare --net true 2>/dev/null && command -v ip >/dev/null && echo yes)
ifeq ($(ISOLATE),yes)
IN_LOOPBACK_NETNS := unshare --net sh -c 'ip link set lo up && exec "$$0" "$$@"'
endif

.PHONY: install browser run test bench bench-preview bench-uploads bench-api bench-drain bench-cache bench-events bench-gpu gpu-wheels stop-db clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | { grep -v 'is ignored' || true; }
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	@echo "Once it says the app is running, open http://127.0.0.1:8000 (the shop) and http://127.0.0.1:8000/admin"
	@echo "Admin users: $(PY) -m serve_app.cli create-admin <name>   (then log in at /admin)"
	@echo "Ray dashboard: http://127.0.0.1:8265, token: $(VENV)/bin/ray get-auth-token   scale: $(PY) -m serve_app.cli scale --help"
	$(PY) -m serve_app.cli run

# The browser tests (tests/e2e) drive Debian's Chromium: installed here when missing, where apt-get and root
# (or password-less sudo) allow; otherwise those tests skip, saying so, and the rest run.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if ! command -v apt-get >/dev/null; then SUDO=none; elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "no Chromium, and no root to apt-get install chromium: the browser tests will skip"; \
	  else $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || echo "apt-get install chromium failed: the browser tests will skip"; fi; }

test: install browser
	$(IN_LOOPBACK_NETNS) $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

bench: install
	$(IN_LOOPBACK_NETNS) $(PY) bench/e2e_latency.py $(BENCH_ARGS)

bench-preview: install
	$(PY) bench/preview.py $(BENCH_ARGS)

# Ten concurrent 25 MP uploads: the ingress's extra RSS and GET /catalog p50, the upload path before and after.
bench-uploads: install
	$(PY) bench/uploads.py $(BENCH_ARGS)

bench-api: install
	$(IN_LOOPBACK_NETNS) $(PY) bench/api_load.py $(BENCH_ARGS)

# Draining 100 one-cut jobs: cuts/s through the service beside the same cuts through the model in-process.
bench-drain: install
	$(IN_LOOPBACK_NETNS) $(PY) bench/drain.py $(BENCH_ARGS)

# A job served from the render cache beside the same job rendered.
bench-cache: install
	$(IN_LOOPBACK_NETNS) $(PY) bench/cache_hit.py $(BENCH_ARGS)

# Live progress: requests per job with server-sent events vs 2 s polling; p99 of polling with 200 streams open.
bench-events: install
	$(IN_LOOPBACK_NETNS) $(PY) bench/job_events.py $(BENCH_ARGS)

# The generator against plain diffusers on this machine's GPU (tiny-random on the CPU).
bench-gpu: install
	$(PY) bench/gpu_generate.py $(BENCH_ARGS)

# Wheels that bench/lent_gpu.sh unpacks on a GPU machine lacking them, at the versions installed here.
gpu-wheels: install
	rm -rf .gpu-wheels && $(PY) -m pip download -q --no-deps --only-binary=:all: -d .gpu-wheels \
	  $$($(PY) -m pip list --format=freeze | grep -iE '^(diffusers|controlnet.aux|importlib.metadata|zipp|cachetools)==') 2>&1 | { grep -v 'is ignored' || true; }

stop-db: install
	$(PY) -m serve_app.cli stop-db

clean:
	rm -rf $(VENV) *.egg-info
