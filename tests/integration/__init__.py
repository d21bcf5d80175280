"""The whole pipeline on real runners, emulators and Chromium (marked integration)."""
