"""Refunds are created under their order: see payments.orders.controllers (POST /orders/{id}/refunds)."""
