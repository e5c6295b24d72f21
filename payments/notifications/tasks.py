"""Notifications are pushed by the channels; missing ones are made up for by orders.tasks.settle_stale_orders."""
