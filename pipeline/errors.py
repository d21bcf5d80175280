"""The CLI's one user-error type (no heavy imports: every command loads it)."""


class ConfigError(ValueError):
    """A usage error: a flag, argument or prerequisite that cannot work.
    Printed as one line, exit code 2."""
