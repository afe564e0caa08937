"""Fakes shipped with mlxjan for its own tests and for integrators' tests."""
