# The two commands of the README: `make train` (main job) and `make test` (CI). Each creates the virtual
# environment on first use and installs the project into it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install train test test-all lint format bench clean

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision resolve together from the package index (never pin torch to a local wheel: its
	# torchvision ops would not load).
	$(PY) -m pip install --quiet -e '.[mm,train,export,dev]'
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

install: $(STAMP)

# Main job: DenseNet-BC (L=100, k=12) on scikit-learn's digits, about two CPU minutes, >= 95% test accuracy.
train: $(STAMP)
	$(PY) tools/train_cls.py configs/cls/densenet_bc_digits.py

# Lint first (ruff, 120 columns), then the CPU suite. One process: with 2 cores, pytest-xdist workers fight over
# torch's threads and the suite runs 3x slower.
test: lint
	$(PY) -m pytest --durations=10

test-all: $(STAMP)
	$(PY) -m pytest -m ''

# Speed and memory side by side with torchvision and timm (minutes on a CPU; add --device cuda on a GPU).
bench: $(STAMP)
	$(PY) tools/benchmark.py --models densenet_bc100_k12_cifar --batch-size 64 --img-size 32 --modes train eval \
		--impls torchvision ours:plain ours:buffer ours:efficient timm timm:checkpoint torchvision:checkpoint
	$(PY) tools/benchmark.py --models densenet_bc121_k32 --batch-size 16 --img-size 224 --modes train eval \
		--impls torchvision ours:plain ours:buffer ours:efficient timm timm:checkpoint torchvision:checkpoint

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
