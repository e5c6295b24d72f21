"""Pending refunds are settled by payments.orders.tasks.settle_payments, which asks the channels."""
