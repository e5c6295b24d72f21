"""The audit trail: who did what to whom, when, and how it ended."""
