"""Offline, fast tests (`make check`): no emulator, cluster or browser."""
