"""Targets the dispatcher places work on: GPU, simulated ASIC and host CPU."""
