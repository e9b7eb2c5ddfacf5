"""Experiments and the chaosgrad command line; they use only the public API of systems and estimators."""
