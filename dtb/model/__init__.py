"""Neuron models with their parameters, and the Recipe that describes a network."""
