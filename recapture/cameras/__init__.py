"""cameras stage."""
