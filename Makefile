.PHONY: vm-test

# Real-kernel tier (tests/vm/README.md): needs root; first run ~1 min of set-up.
vm-test:
	tests/vm/run
