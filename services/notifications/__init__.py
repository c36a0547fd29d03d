"""Notifications: webhook endpoints and deliveries, the relay, e-mail and the in-app feed."""
