"""A process that uploads a journal's samples and exits once none is left (the restart tests).

``python -m tests.support.upload_worker <journal> <bucket> <endpoint> <plant> <device>``; the
credentials come from the environment (the token exchange service's two variables).
"""

from __future__ import annotations

import sys
import threading

from inspector.journal import Journal
from inspector.messages import Identity
from inspector.uploader import BotoObjectStore, Uploader


def main(argv: list[str]) -> int:
    """Upload until the journal holds no sample; 0 when done."""
    journal_path, bucket, endpoint, plant, device = argv
    journal = Journal(journal_path, device=device, cap_bytes=64 << 20)
    uploader = Uploader(
        journal,
        Identity(plant, "line-1", "station-1", device),
        BotoObjectStore(bucket, endpoint_url=endpoint),
        bytes_per_hour=1 << 40,
        backoff_min_s=0.05,
        backoff_max_s=0.2,
    )
    stop = threading.Event()
    while journal.stats().samples:
        delay = uploader.step()
        if delay:
            stop.wait(min(delay, 0.2))
    print(f"uploaded {uploader.stats.uploaded} failures {uploader.stats.failures}", flush=True)
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
