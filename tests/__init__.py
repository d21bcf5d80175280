"""stallwatch's tests: unit/ (offline, fast: `make check`), integration/ (the
whole pipeline, emulators, runners, Chromium), e2e/ (real players). `make test`
runs all of them; shared helpers live here."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
