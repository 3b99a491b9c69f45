"""Backends: the swappable parts behind the launch service (local and, later, AWS)."""
