.PHONY: vm-test

# Real-kernel tier (tests/vm/README.md): needs root; first run ~1 min of set-up.
vm-test:
	tests/vm/run

.PHONY: bench

# Benchmarks (issue 8): prints the table and writes bench/results.json.
bench:
	bench/run
