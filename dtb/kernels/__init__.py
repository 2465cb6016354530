"""Compute kernels: counter-based RNG, synapse generation, neuron updates and spike delivery (numba)."""
