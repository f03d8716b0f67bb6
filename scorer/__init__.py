"""scorer package."""
