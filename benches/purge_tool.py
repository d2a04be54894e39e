#!/usr/bin/env python3
"""purge_tool.py - the origin and the clients of benches/purge.sh (issue 26's measurements).

  purge_tool.py origin PORT                 an HTTP/1.1 origin (threads, keep-alive) that counts
                                            what it sends; GET /__stats answers the counts
  purge_tool.py latency A_ADMIN B N         N purges made on node A's admin listener; for each,
                                            the time from A's answer to node B's first response
                                            that is not a hit (B polled as fast as one client can)
  purge_tool.py prime NODE PATH_FMT N [C]   GET NODE PATH_FMT % i for i < N, C connections

Origin paths: /tag/I (1 KiB, Surrogate-Key: big), /obj/I (16 KiB), /lat/I (100 B), /hot (1 KiB);
all public, max-age=3600, ETag "v1" (a matching If-None-Match gets 304).
"""
import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {"requests": 0, "full": 0, "not_modified": 0, "body_bytes": 0}
LOCK = threading.Lock()


class Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/__stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.answer(200, body, {})
        size = 1024
        extra = {}
        if self.path.startswith("/tag/"):
            extra["Surrogate-Key"] = "big"
        elif self.path.startswith("/obj/"):
            size = 16384
        elif self.path.startswith("/lat/"):
            size = 100
        with LOCK:
            STATS["requests"] += 1
        if self.headers.get("If-None-Match") == '"v1"':
            with LOCK:
                STATS["not_modified"] += 1
            return self.answer(304, b"", {"ETag": '"v1"', "Cache-Control": "public, max-age=3600"})
        with LOCK:
            STATS["full"] += 1
            STATS["body_bytes"] += size
        extra.update({"ETag": '"v1"', "Cache-Control": "public, max-age=3600"})
        self.answer(200, b"x" * size, extra)

    def answer(self, status, body, headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


def origin(port):
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", int(port)), Origin).serve_forever()


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def get(conn, path, host="www.example"):
    conn.request("GET", path, headers={"Host": host})
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("Cache-Status", "")


def latency(a_admin, b, n):
    a = http.client.HTTPConnection(*split(a_admin))
    bc = http.client.HTTPConnection(*split(b))
    times = []
    for i in range(int(n)):
        path = f"/lat/{i}"
        get(bc, path)
        _, cs = get(bc, path)
        assert "; hit" in cs, cs
        body = json.dumps({"files": [f"http://www.example{path}"]})
        a.request("POST", "/purge", body=body, headers={"Content-Type": "application/json"})
        r = a.getresponse()
        r.read()
        assert r.status == 200
        answered = time.perf_counter()
        polls = 0
        while True:
            _, cs = get(bc, path)
            polls += 1
            if "; hit" not in cs:
                break
            if time.perf_counter() - answered > 5:
                raise SystemExit(f"{path}: B still serving it 5 s after A's answer")
        times.append((time.perf_counter() - answered) * 1000)
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(len(times) * p / 100))]
    print(f"RESULT purges={len(times)} p50={pct(50):.2f}ms p99={pct(99):.2f}ms max={times[-1]:.2f}ms")


def prime(node, fmt, n, conns=8):
    n, conns = int(n), int(conns)

    def work(k):
        c = http.client.HTTPConnection(*split(node))
        for i in range(k, n, conns):
            get(c, fmt % i)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"origin": origin, "latency": latency, "prime": prime}[cmd](*args)
