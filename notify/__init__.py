"""Notifications: in-app (inbox.py) and by email (digests through a mailer)."""
