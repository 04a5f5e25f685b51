"""Benchmark: merging field samples from S3 (a moto server on loopback); prints JSON.

    python bench/training_merge.py [--samples 600] [--side 256] [--relabel-share 0.1]

Uploads ``--samples`` labelled PNGs (the sample generator's brick, ``--side`` px) from 4 devices
over 5 days, a share of them relabelled (a second object under another layout), and times
``training.merge.merge_samples`` against a 30-image base: objects per second listed, fetched and
checked, and bytes fetched. moto's server is a local process, so this measures the merge's own
cost (listing, one GetObject per labelled object, Pillow's check, the copy), not S3's latency.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    """Upload, merge, print the figures."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from training.merge import FETCH_THREADS, merge_samples
    from training.sample_data import PRODUCTS, Size, generate_product

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=600)
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--relabel-share", type=float, default=0.1)
    args = p.parse_args()
    brick = next(x for x in PRODUCTS if x.name == "brick")
    work = Path(tempfile.mkdtemp(prefix="lineguard-bench-merge-"))
    generate_product(brick, work / "base", Size(good=24, per_defect_type=1, side=args.side), 0)
    generate_product(brick, work / "field", Size(good=40, per_defect_type=0, side=args.side), 1)
    pngs = [path.read_bytes() for path in sorted((work / "field" / "good").glob("*.png"))]
    with socket.socket() as probe:  # a free loopback port for the server
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=f"http://127.0.0.1:{port}",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
        bucket = "lineguard-artifacts-bench"
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        relabels = int(args.samples * args.relabel_share)
        uploaded = 0
        for i in range(args.samples):
            device, day = f"lineguard-bench-D{i % 4}", f"2025030{1 + i % 5}"
            layouts = ["good"] if i >= relabels else ["defect/scratch", "good"]
            for n, layout in enumerate(layouts):
                body = pngs[i % len(pngs)]
                s3.put_object(Bucket=bucket, Key=f"samples/bench/{device}/{layout}/{day}_P-{i}_{i}.png",
                              Body=body, Metadata={"part-id": f"P-{i}", "seq": str(i),
                              "labelled-at": f"2025-03-01T10:0{n}:00.000Z"})  # fmt: skip
                uploaded += len(body)
        started = time.perf_counter()
        summary = merge_samples(work / "base", f"s3://{bucket}/samples/bench/", work / "out",
                                s3_client=s3, log=lambda _: None)  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    objects = args.samples + relabels
    print(
        json.dumps(
            {
                "objects": objects,
                "parts": args.samples,
                "image_side_px": args.side,
                "bytes_fetched": uploaded,
                "fetch_threads": FETCH_THREADS,
                "merge_seconds": round(seconds, 2),
                "objects_per_second": round(objects / seconds, 1),
                "mb_per_second": round(uploaded / seconds / 1e6, 2),
                "used": summary.used,
                "duplicates_dropped": len(summary.duplicates_dropped),
                "skipped": len(summary.skipped),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
