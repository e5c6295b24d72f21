"""Taizhou Tong backend: the composition root that wires the domain packages into one server."""
