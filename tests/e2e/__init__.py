"""Real-browser end-to-end helpers: synthetic VOD, a delaying origin, a CMCD/beacon
recorder and a headless Chromium driver (see tests/e2e/README in the module docstrings)."""
