"""``python -m transforms.worker``: one Beam SDK harness worker process with
``transforms.harness`` installed before it runs anything. Started by
``pipeline/workerpool.py`` for a runner's StartWorker request.
"""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from transforms import harness


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m transforms.worker")
    parser.add_argument("--control", required=True, help="the runner's control endpoint")
    parser.add_argument("--id", required=True, help="the worker id the runner gave")
    parser.add_argument("--state_cache_bytes", type=int, default=0)
    parser.add_argument("--data_buffer_ms", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:%(name)s:%(message)s")
    harness.install()
    from apache_beam.runners.worker.sdk_worker import SdkHarness
    SdkHarness(args.control, worker_id=args.id, state_cache_size=args.state_cache_bytes,
               data_buffer_time_limit_ms=args.data_buffer_ms).run()


if __name__ == "__main__":
    main()
