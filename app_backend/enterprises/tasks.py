"""Enterprises have no background work yet; standing updates from the market-regulation feed will live here."""
