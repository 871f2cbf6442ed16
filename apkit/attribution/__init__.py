"""apkit.attribution."""
