# Two entry points, each doing its own set-up first (see README).
.PHONY: setup up test down bench bench-large

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

# P2 on the 101-host local cluster the issue names too (beside 3 and 21 hosts). Apart from
# `bench` because of its cost here: building 101 local hosts (each with its own sshd, launchers
# and a load agent publishing to etcd) takes many minutes and loads a small machine heavily.
bench-large: setup
	BENCH_LOCAL_SIZES=3,21,101 .venv/bin/python bench/run.py p2p4
