"""Organisations (departments, verifier operators, merchants, operations), their machine credentials, admin."""
