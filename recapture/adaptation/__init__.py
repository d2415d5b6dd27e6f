"""adaptation stage."""
