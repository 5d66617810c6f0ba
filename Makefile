# Set-up on a fresh machine is part of every target: `make demo` and `make test` create .venv,
# install selfsup and its dependencies, then run.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch / torchvision are installed first, pinned; override for another platform, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup test demo lint format bench-views fashion-mnist chromium clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(VENV)/.installed chromium

test: setup fashion-mnist
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff format src tests benchmarks

# Debian's dataset-fashion-mnist package puts the IDX files where selfsup looks first; without
# apt (or root), the demo lets torchvision download them into the data root instead.
fashion-mnist:
	@if [ ! -e $(FASHION_MNIST) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1) || \
		echo "apt could not install dataset-fashion-mnist; torchvision will download it"; \
	fi

# tests/test_report.py opens the HTML report in headless Chromium (Debian's chromium package,
# driven by playwright; nothing is downloaded). Installed here when missing, with apt and root;
# elsewhere install it yourself, point SELFSUP_CHROMIUM at one, or set SELFSUP_NO_BROWSER=1.
chromium:
	@if [ -z "$$SELFSUP_CHROMIUM" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
		echo "apt could not install chromium; the browser tests will fail (SELFSUP_NO_BROWSER=1 skips them)"; \
	fi

demo: setup fashion-mnist
	$(VENV)/bin/selfsup pretrain --config configs/demo.yaml --out $(DEMO_OUT) data.download=true

bench-views: setup
	$(PY) benchmarks/views.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
