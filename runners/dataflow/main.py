"""Flex Template entry point: the launcher runs this with the job's parameters
as flags (``--source=... --output=... --runner=DataflowRunner --project=...``)."""

import sys

from runners.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
