#!/usr/bin/env python3
"""How long a line appended to a followed file takes to show in the status API's snapshot.

Starts `egresslens collect --file LOG --listen ADDR` (following), appends generated lines one
at a time at RATE lines a second, and polls /api/v1/snapshot every few milliseconds; a line
has arrived when the snapshot's `records` count reaches it. Prints the latency's median, p99
and worst over all lines.

Usage: benches/latency.py BINARY [LINES] [RATE]   (default 10000 lines at 1000 a second)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_records(url):
    with urllib.request.urlopen(url + "/api/v1/snapshot", timeout=5) as answer:
        return json.load(answer)["records"]


def main():
    binary = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 1_000.0
    work = tempfile.mkdtemp(prefix="egresslens-latency-")
    log = os.path.join(work, "waypoint.log")
    generated = subprocess.run(
        [binary, "gen", "--lines", str(lines), "--seed", "3"],
        check=True, capture_output=True,
    ).stdout.splitlines(keepends=True)
    open(log, "wb").close()
    url = f"http://127.0.0.1:{free_port()}"
    collector = subprocess.Popen(
        [binary, "collect", "--file", log, "--store", os.path.join(work, "store"),
         "--listen", url.removeprefix("http://")],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("the collector did not become ready")
            time.sleep(0.05)

        written = [0.0] * len(generated)

        def write():
            start = time.monotonic()
            with open(log, "ab", buffering=0) as out:
                for i, line in enumerate(generated):
                    due = start + i / rate
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    written[i] = time.monotonic()
                    out.write(line)

        writer = threading.Thread(target=write)
        writer.start()
        latencies, seen = [], 0
        deadline = time.monotonic() + len(generated) / rate + 30
        while seen < len(generated) and time.monotonic() < deadline:
            records = snapshot_records(url)
            now = time.monotonic()
            while seen < min(records, len(generated)):
                latencies.append(now - written[seen])
                seen += 1
            time.sleep(0.002)
        writer.join()
    finally:
        collector.terminate()
        collector.wait()
    if seen < len(generated):
        sys.exit(f"only {seen} of {len(generated)} lines reached the snapshot")
    latencies.sort()
    ms = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
    print(f"{len(latencies)} lines at {rate:g}/s, appended to a followed file -> /api/v1/snapshot:")
    print(f"  median {ms(0.5):.0f} ms, p99 {ms(0.99):.0f} ms, worst {latencies[-1] * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
