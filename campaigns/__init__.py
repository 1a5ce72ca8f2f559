"""Accounts, campaigns and lead lists."""
