"""stallwatch pipeline assembly: options, config, I/O, build() and the CLI."""
