"""Accounts, roles, API tokens, browser sessions, CSRF and the audit log."""
