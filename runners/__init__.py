"""Launch presets: argv lists per runner, printed by ``python -m runners NAME``."""
