# The two commands of the README: `make train` (main job) and `make test` (CI). Each creates the virtual
# environment on first use and installs the project into it.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# GNU OpenMP's waiting threads sleep after 3000 spins instead of ~300,000: a job beside another CPU job is then
# 1.4-1.9x slower instead of 6.4x, at the same speed alone (docs/benchmarks.md, "CPU contention"; tools/cpu_env.py
# sets the same default for tools run directly). An environment value wins.
export GOMP_SPINCOUNT ?= 3000

.PHONY: install timm-tests train test test-fast test-all test-lower-bounds lint format bench clean gpu-check gpu-check-dry gpu-wheels

$(STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision resolve together from the package index (never pin torch to a local wheel: its
	# torchvision ops would not load).
	$(PY) -m pip install --quiet -e '.[mm,train,export,deploy,dev]'
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	# mmengine imports yapf, which writes its grammar pickles into its package on first import: done here once, not
	# by two pytest workers at the same time (one read the other's half-written file: "EOFError: Ran out of input").
	$(PY) -c "import mmengine.config"
	touch $(STAMP)

# timm's own model tests (tests/test_models.py of the source release of exactly the installed timm, from the package
# index through pip) into .cache/timm-tests/ (ignored by git), for tests/timm_suite/ (docs/timm_suite.md). Once per
# timm version, a no-op after that; the tests download nothing themselves.
timm-tests: $(STAMP)
	$(PY) tools/fetch_timm_tests.py

install: $(STAMP) timm-tests

# Main job: DenseNet-BC (L=100, k=12) on scikit-learn's digits, about two CPU minutes, >= 95% test accuracy.
# A second `make train` continues the run in its work dir (or re-evaluates it when finished), never replaces it;
# `make train ARGS=--overwrite` starts over.
ARGS ?= --resume auto
train: $(STAMP)
	$(PY) tools/train_cls.py configs/cls/densenet_bc_digits.py $(ARGS)

# Lint first (ruff, 120 columns), then the CPU suite in two pytest-xdist workers: with GOMP_SPINCOUNT=3000 (above)
# they no longer spin against each other, and the suite takes 387 s instead of 547 s in one process on the 2-core
# machine (docs/benchmarks.md, "CPU contention"; before the setting, two workers ran it 3x slower).
test: lint timm-tests
	$(PY) -m pytest -n 2 --durations=10

# The unit tests without training or tool runs (tests marked `integration` left out), for a quick check while
# working (a few minutes). `make test` stays what CI runs; the measured times of both are in
# docs/benchmarks.md ("Test suite time ...").
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m 'not slow and not gpu and not integration' --durations=5

test-all: $(STAMP) timm-tests
	$(PY) -m pytest -m ''

# Speed and memory side by side with torchvision and timm (minutes on a CPU; add --device cuda on a GPU).
bench: $(STAMP)
	$(PY) tools/benchmark.py --models densenet_bc100_k12_cifar --batch-size 64 --img-size 32 --modes train eval \
		--impls torchvision ours:plain ours:buffer ours:efficient timm timm:checkpoint torchvision:checkpoint
	$(PY) tools/benchmark.py --models densenet_bc121_k32 --batch-size 16 --img-size 224 --modes train eval \
		--impls torchvision ours:plain ours:buffer ours:efficient timm timm:checkpoint torchvision:checkpoint

# On a GPU machine (docs/gpu.md): the CUDA tests, two-iteration trainings with bf16 and channels_last, and a short
# benchmark, in one log (about 5 minutes on an H100/H200). No install step: where there is no venv, pass the Python
# that has torch (make gpu-check PY=python3) and carry the other packages as wheels (make gpu-wheels).
gpu-check:
	$(PY) tools/gpu_check.py --log gpu-check.log

# The same steps on the CPU, GPU tests skipped (tests/tools/test_gpu_check.py runs this in CI).
gpu-check-dry: $(STAMP)
	$(PY) tools/gpu_check.py --dry-run --log gpu-check-dry.log

# Wheels (Python 3.12, manylinux x86-64) of the packages a GPU machine's Python may lack, in the versions of this
# venv, into .whl/ (docs/gpu.md installs them there with --no-index).
GPU_WHEELS := mmengine addict yapf platformdirs termcolor albumentations albucore simsimd stringzilla pydantic \
	pydantic-core annotated-types typing-inspection pycocotools
gpu-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	for name in $(GPU_WHEELS); do \
		version=$$($(PY) -m pip show $$name | sed -n 's/^Version: //p'); \
		$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
			--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
			--platform manylinux2014_x86_64 -d .whl "$$name==$$version" || exit 1; \
	done
	ls .whl && du -sh .whl

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# The declared lower bounds of timm and mmengine (setup.py) beside the torch of `make install`, in their own venv:
# the unit tests of the models, registry and heads (docs/clients.md, "Lower bounds", has the last result). Not run by
# CI (a second environment would double its install time); run it after changing what the library calls in timm or
# mmengine.
LOWER_VENV ?= .venv-lower
test-lower-bounds:
	test -x $(LOWER_VENV)/bin/python || $(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOWER_VENV)/bin/python -m pip install --quiet -e '.[mm,train,dev]' "timm==1.0.20" "mmengine==0.10.6"
	$(LOWER_VENV)/bin/python -m pytest -n 2 -m 'not slow and not gpu and not integration' tests/registry tests/models tests/heads

clean:
	rm -rf $(VENV) $(LOWER_VENV) build *.egg-info .pytest_cache .ruff_cache
