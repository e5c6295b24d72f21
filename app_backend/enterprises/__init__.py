"""Enterprises: created by their legal representative, administered by their members."""
