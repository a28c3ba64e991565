"""Fault injection: the training run is never harmed and nothing measured is lost."""
