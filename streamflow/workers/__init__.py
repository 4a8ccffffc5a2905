"""Shared plumbing of the long-running workers: stop signals and progress output."""
