"""selfheal package."""
