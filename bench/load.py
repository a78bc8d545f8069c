"""End-to-end load: pixmesh (Envoy + wasm filter + sidecar) vs a thumbor server, same images,
same URLs, same concurrency, one machine, one run. Run through bench/load, which starts both.

Each request is a distinct rendition (the box size changes from request to request), so neither
server can answer from a cache or share work between concurrent identical requests: every
request reads, decodes, resizes and encodes. Both use the thumbor URL grammar:
`/unsafe/fit-in/WxW/filters:format(jpeg):quality(80)/IMAGE`.
"""

import argparse
import http.client
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from machine import describe

ROOT = Path(__file__).resolve().parent.parent


def url_path(prefix, image, i):
    side = 400 + (i * 37) % 400  # 8 concurrent requests never share a size
    return f"{prefix}/unsafe/fit-in/{side}x{side}/filters:format(jpeg):quality(80)/{image}"


def load(base, images, total, concurrency, first=0):
    """Latencies (s) of `total` requests (the `first`th rendition on) over `concurrency`
    keep-alive connections, wall time."""
    split = urlsplit(base)
    prefix = split.path.rstrip("/")
    latencies, failures = [], []
    next_index = iter(range(first, first + total))
    lock = threading.Lock()

    def worker():
        conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            path = url_path(prefix, images[i % len(images)], i)
            start = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                ok = resp.status == 200 and body[:2] == b"\xff\xd8"
            except (OSError, http.client.HTTPException) as e:
                ok, resp = False, e
                conn.close()
                conn = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
            elapsed = time.perf_counter() - start
            with lock:
                (latencies if ok else failures).append(
                    elapsed if ok else f"{path}: {getattr(resp, 'status', resp)}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        sys.exit(f"{base}: {len(failures)} failed requests, e.g. {failures[0]}")
    return latencies, wall


def summary(latencies, wall):
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"rps": len(latencies) / wall, "p50": pick(0.50), "p99": pick(0.99),
            "mean": statistics.mean(latencies) * 1000}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pixmesh", required=True, help="base URL of the pixmesh route")
    parser.add_argument("--thumbor", required=True, help="base URL of thumbor")
    parser.add_argument("--images", required=True, nargs="+")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--thumbor-version", default="?")
    args = parser.parse_args()

    servers = (("pixmesh", args.pixmesh), ("thumbor", args.thumbor))
    for _, base in servers:
        load(base, args.images, 2 * args.concurrency, args.concurrency)  # warm-up
    # The servers take turns, a share of the requests each round, so a slower minute on a
    # shared machine weighs on both alike.
    share = args.requests // args.rounds
    runs = {name: ([], 0.0) for name, _ in servers}
    for round_ in range(args.rounds):
        for name, base in servers:
            latencies, wall = load(base, args.images, share, args.concurrency, round_ * share)
            runs[name] = (runs[name][0] + latencies, runs[name][1] + wall)
    results = {name: summary(*run) for name, run in runs.items()}
    for name, r in results.items():
        print(f"{name}: {r['rps']:.1f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms",
              file=sys.stderr)

    p, t = results["pixmesh"], results["thumbor"]
    lines = [
        f"# pixmesh vs thumbor, end to end ({time.strftime('%Y-%m-%d')})",
        "",
        f"{share * args.rounds} requests at concurrency {args.concurrency} over keep-alive "
        f"connections, after a warm-up, in {args.rounds} rounds the servers take turns in; "
        f"every request a distinct rendition (fit-in 400–799 px box, JPEG q80) of "
        f"one of: {', '.join(args.images)}. pixmesh: Envoy + wasm filter + sidecar (release), "
        f"local-directory loader, no result storage. thumbor {args.thumbor_version}: file loader, "
        f"no storage, no result storage, one process per core. {describe()}; "
        "client, servers and Envoy share the machine. Regenerate with `bench/load`.",
        "",
        "| server | req/s | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} "
                     f"| {r['mean']:.1f} |")
    lines += ["", f"pixmesh/thumbor: **{p['rps'] / t['rps']:.2f}×** req/s, "
              f"p50 {p['p50'] / t['p50']:.2f}×, p99 {p['p99'] / t['p99']:.2f}× (lower is better)."]
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "LOAD.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
