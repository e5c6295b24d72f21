"""Organisations have no background work yet; credential expiry reminders will live here."""
