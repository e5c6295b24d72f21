"""Daily reconciliation of the channels' bills against our orders and refunds."""
