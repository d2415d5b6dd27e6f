"""anchor stage."""
