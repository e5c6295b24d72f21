"""Notifications arrive in each channel's own format; the provider-neutral form is channels.base.Notification."""
