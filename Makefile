# make demo: run the quickstart suite on the embedded digits data and write a report.
# make test: lint and run the whole test suite.
# Both create .venv if missing; torch==2.13.0 (CPU) is installed first so that nothing
# pulls another torch build (the ray extra is installed too: the Ray executor is tested).
# torchattacks is the tests' reference for APGD and AutoAttack only, installed with
# --no-deps (its requirements would pull another torch build).
# make test-vision: the tests marked vision (torchvision and timm models) in .venv-vision,
# torch==2.14.1 + torchvision==0.29.1 (a CUDA build: about 6 GB, 90 s to install; it runs on
# the CPU too) with the vision extra. torchvision's wheels do not load next to the CPU-only
# torch 2.13.0 of .venv. The same venv is the one to use on a GPU machine.
# make test also installs Debian's chromium and chromium-driver
# (the HTML report is checked in a headless browser) when they are missing: as root, or
# through sudo.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.poisonlab-installed
VENV_VISION ?= .venv-vision
VSTAMP := $(VENV_VISION)/.poisonlab-installed
DEMO_OUT ?= runs/quickstart

.PHONY: demo test test-vision lint install install-vision browser clean study bench-scale \
        certified

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,mnist,ray]'
	$(BIN)/python -m pip install --quiet --no-deps torchattacks==3.5.1
	touch $(STAMP)

install-vision: $(VSTAMP)

$(VSTAMP): pyproject.toml Makefile
	test -x $(VENV_VISION)/bin/python || $(PYTHON) -m venv $(VENV_VISION)
	$(VENV_VISION)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV_VISION)/bin/python -m pip install --quiet -e '.[dev,vision]'
	touch $(VSTAMP)

demo: $(STAMP)
	rm -rf $(DEMO_OUT)
	$(BIN)/poisonlab run benchmarks/suites/quickstart.yaml --out $(DEMO_OUT)

# The label-smoothing study (benchmarks/suites/label_smoothing_study.yaml and its parts):
# runs every suite into runs/label_smoothing_study/ and regenerates
# docs/label_smoothing_study.md and its figures from the results (about 13 minutes on 2
# cores; tests/integration/test_study.py runs a reduced grid of the same suites).
study: $(STAMP)
	rm -rf runs/label_smoothing_study
	$(BIN)/python -m benchmarks.study.label_smoothing --out runs/label_smoothing_study \
	  --workers 2 --doc docs/label_smoothing_study.md

# Certified robustness to label flips (docs/certified.md): the certified suite on digits
# (report with the certified curve beside the accuracy under the label-flip attacks, 2.5
# minutes on 2 cores), then the table over k, features and d on mnist5k and digits
# (benchmarks/study/certified.py, about 75 s).
certified: $(STAMP)
	rm -rf runs/certified
	$(BIN)/poisonlab run benchmarks/suites/certified.yaml --out runs/certified
	$(BIN)/python -m benchmarks.study.certified

# The scale benchmark (benchmarks/perf/scale.py): PGD and a security curve on CIFAR-shaped
# inputs, cnn and resnet18, n = 512, 2048, 8192 at batch size 256; wall time, samples/s and
# peak RSS of every run next to a plain chunked torch loop (about 40 minutes on 2 cores).
bench-scale: $(STAMP)
	mkdir -p runs
	$(BIN)/python -m benchmarks.perf.scale --json runs/bench-scale.json

lint: $(STAMP)
	$(BIN)/ruff check poisonlab tests benchmarks

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(APT) install chromium chromium-driver >/dev/null || \
	    { $(APT) update >/dev/null && $(APT) install chromium chromium-driver >/dev/null; }; }

test: $(STAMP) lint browser
	POISONLAB_REQUIRE_BROWSER=1 POISONLAB_REQUIRE_RAY=1 $(BIN)/python -m pytest -q

test-vision: $(VSTAMP)
	POISONLAB_REQUIRE_VISION=1 $(VENV_VISION)/bin/python -m pytest -q -m vision tests/vision

clean:
	rm -rf $(VENV) $(VENV_VISION) runs .pytest_cache .ruff_cache .hypothesis
