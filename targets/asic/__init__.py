"""The simulated systolic ASIC: NumPy kernels, timing model and target."""
