"""depth stage."""
