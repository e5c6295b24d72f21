"""Notifications change orders through payments.orders.repository; they store nothing of their own yet."""
