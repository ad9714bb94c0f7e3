# Two entry points, each doing its own set-up first (see README).
.PHONY: setup up test down bench

setup:
	bash .ci/setup

up: setup
	.venv/bin/provision up examples/local.yaml --yes

down: setup
	.venv/bin/provision down examples/local.yaml --yes

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider -p random_order --random-order tests

bench: setup
	.venv/bin/python bench/run.py
