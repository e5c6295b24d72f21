"""Codes need no background work: credentials expire by their own dates."""
