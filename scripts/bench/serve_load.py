"""Load test of a running `finetune serve` (loopback): N concurrent clients send M requests each.

  python scripts/bench/serve_load.py classifier URL PID --clients 8 --requests 40 --texts data.csv
  python scripts/bench/serve_load.py decoder URL PID --clients 4 --requests 4 --max-tokens 32

Prints throughput, p50/p99 latency, errors and the server's peak RSS (VmHWM of PID). Standard library only.
"""
import argparse
import csv
import http.client
import json
import statistics
import sys
import threading
import time
from urllib.parse import urlparse


def post(url, path, body):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["classifier", "decoder"])
    ap.add_argument("url")
    ap.add_argument("pid", type=int)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--texts", help="CSV with a text column (classifier)")
    ap.add_argument("--per-request", type=int, default=1, help="texts per /predict request")
    ap.add_argument("--max-tokens", type=int, default=32)
    a = ap.parse_args()

    if a.kind == "classifier":
        with open(a.texts, newline="") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
        need = a.clients * a.requests * a.per_request
        texts = (texts * (need // len(texts) + 1))[:need]
    prompts = ["Write a subject line for an e-mail about the quarterly budget review.",
               "Summarise in one sentence: the train was late, so the meeting started at ten.",
               "Name three colours.", "What is the capital of Italy?"]

    latencies, errors, units = [], [], [0]
    lock = threading.Lock()

    def client(c):
        for r in range(a.requests):
            if a.kind == "classifier":
                i = (c * a.requests + r) * a.per_request
                path, body = "/predict", {"inputs": texts[i:i + a.per_request]}
            else:
                msg = prompts[(c + r) % len(prompts)]
                path = "/v1/chat/completions"
                body = {"messages": [{"role": "user", "content": msg}], "max_tokens": a.max_tokens,
                        "temperature": 0}
            t = time.perf_counter()
            try:
                status, data = post(a.url, path, body)
            except Exception as e:  # noqa: BLE001 - every failure counts as an error
                status, data = -1, str(e).encode()
            dt = time.perf_counter() - t
            with lock:
                if status != 200:
                    errors.append((status, data[:200]))
                    continue
                latencies.append(dt)
                if a.kind == "classifier":
                    units[0] += a.per_request
                else:
                    units[0] += json.loads(data)["usage"]["completion_tokens"]

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    unit = "texts" if a.kind == "classifier" else "completion tokens"
    result = {
        "kind": a.kind, "clients": a.clients, "requests": a.clients * a.requests, "errors": len(errors),
        "wall_s": round(wall, 3), "throughput": round(units[0] / wall, 2), "unit": f"{unit}/s",
        "requests_per_s": round(len(lat) / wall, 2), "p50_ms": round(p(0.50) * 1000, 1),
        "p99_ms": round(p(0.99) * 1000, 1), "mean_ms": round(statistics.mean(lat) * 1000, 1) if lat else None,
        "server_peak_rss_mib": round(peak_rss_mib(a.pid), 1),
    }
    print(json.dumps(result))
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
