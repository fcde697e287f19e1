"""wirebus."""
