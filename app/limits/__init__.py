"""Limits on what one request, one config and one user may ask of the service."""
