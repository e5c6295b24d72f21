"""Feeds arrive by push; nothing runs in the background yet."""
