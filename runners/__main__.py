"""Print a runner preset's flags: ``stallwatch run $(python -m runners direct) ...``."""

import sys

from runners.presets import PRESETS

if len(sys.argv) != 2 or sys.argv[1] not in PRESETS:
    print(f"usage: python -m runners {{{'|'.join(sorted(PRESETS))}}}", file=sys.stderr)
    sys.exit(2)
print(" ".join(PRESETS[sys.argv[1]]))
