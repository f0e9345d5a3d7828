# Two commands do all the set-up on a fresh machine:
#   make demo   -> .venv, install, pretrain on the embedded synthetic videos, then balance CartPole by planning
#   make test   -> .venv, install, run the test suite
#   make test-fast -> the same without the tests marked slow (under 2 minutes on 2 cores)
# GPU users: make demo TORCH_SPEC="torch" (or any pip spec / index you need).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
export SDL_VIDEODRIVER ?= dummy

.PHONY: install demo test test-fast lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[all,dev,torchrl,wandb]"
	touch $@

install: $(VENV)/.installed

demo: install
	rm -rf runs/demo runs/demo-plan
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		scripts/pretrain_video.py --out runs/demo --max-steps 60
	$(PY) scripts/plan.py --env CartPole-v1 --obs state --episodes 3 --out runs/demo-plan

test: install
	$(PY) -m pytest tests

test-fast: install
	$(PY) -m pytest tests -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) scripts/bench_pretrain.py --config configs/cpu-small.yaml

clean:
	rm -rf runs .pytest_cache
