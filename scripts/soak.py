#!/usr/bin/env python3
"""Bounded soaks of the release binary (issue 23), loopback only, Python's standard library only.

Each soak starts its own edgecache (and origin, and Redis where it needs one) on free loopback
ports, runs for --duration seconds, stops by itself, prints its figures and whether it met its
target. Run through scripts/soak.sh, which builds the binary when it is missing.

  hot-set        a primed hot set while the origin flaps (refused, 503, back): 0 errors on
                 primed keys; file descriptors, threads and memory back to their baseline after
  cache-busting  an attacker requesting unique URLs next to normal users: the users' hit ratio
                 stays >= 90 % of what it was before the attack
  redis-chaos    Redis killed, paused and restarted under load: 0 failed requests
  expiry-storm   hundreds of keys expiring together under load: <= 1 origin request per key per
                 expiry
  conn-abuse     slowloris, silent, half-sent bodies, garbage and half HTTP/2 prefaces next to
                 normal clients: normal clients 100 % served
"""

import argparse
import asyncio
import collections
import email.utils
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20

# Every edgecache and redis-server a soak starts, so that main() can kill whichever are still
# running when the soak ends by an exception or its time bound instead of stopping them itself.
CHILDREN = []


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid):
    """Open file descriptors, threads and resident memory (KiB) of a process."""
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(re.search(r"Threads:\s+(\d+)", status).group(1)),
        "rss_kib": int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)),
    }


class Proxy:
    """The release binary with a proxy.toml of the soak's own; its log drained in the background."""

    def __init__(self, binary, workdir, origin_port, extra=""):
        self.binary, self.workdir = binary, workdir
        self.config = os.path.join(workdir, "proxy.toml")
        with open(self.config, "w") as f:
            f.write(
                f'listen = "127.0.0.1:0"\norigin = "http://127.0.0.1:{origin_port}"\n'
                "[log]\naccess = false\n" + extra
            )
        self.proc, self.addr, self.log = None, None, collections.deque(maxlen=200)

    async def start(self):
        env = dict(os.environ, RUST_LOG="warn,edgecache=info")
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "--config", self.config,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        CHILDREN.append(self.proc)
        async def until_started():
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError("edgecache exited: " + "".join(self.log))
                text = line.decode(errors="replace")
                self.log.append(text)
                m = re.search(r"listen=([0-9.]+):(\d+)", text)
                if "edgecache started" in text and m:
                    return m.group(1), int(m.group(2))
        self.addr = await asyncio.wait_for(until_started(), 30)
        self.drain = asyncio.create_task(self._drain())

    async def _drain(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            self.log.append(line.decode(errors="replace"))

    def stats(self):
        return proc_stats(self.proc.pid)

    async def stop(self):
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.proc.returncode not in (0, -signal.SIGTERM):
            raise RuntimeError(f"edgecache exited with {self.proc.returncode}: " + "".join(self.log))


class Redis:
    """A redis-server child on a free loopback port, no persistence."""

    def __init__(self, workdir):
        self.port, self.workdir, self.proc = free_port(), workdir, None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        CHILDREN.append(self.proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer")

    def kill(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --------------------------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams: an origin and a client
# --------------------------------------------------------------------------------------------


def http_date():
    return email.utils.formatdate(usegmt=True)


class Origin:
    """An HTTP/1.1 origin answering with handler(method, path, headers) -> (status, fields, body);
    it can go down (refusing connections, cutting open ones) and come back on the same port."""

    def __init__(self, handler):
        self.handler, self.server, self.port = handler, None, 0
        self.writers, self.count = set(), 0
        self.per_path = collections.defaultdict(list)

    async def start(self):
        self.server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self):
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                self.count += 1
                self.per_path[path].append(time.monotonic())
                status, fields, body = self.handler(method, path, headers)
                out = [f"HTTP/1.1 {status} X", f"date: {http_date()}", f"content-length: {len(body)}"]
                out += [f"{k}: {v}" for k, v in fields]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()


class Client:
    """One keep-alive client connection; reconnects after an error."""

    def __init__(self, addr, timeout=10):
        self.addr, self.timeout, self.reader, self.writer = addr, timeout, None, None

    async def get(self, path, host="soak.example"):
        """(status, headers, body); raises on a transport error or timeout."""
        try:
            return await asyncio.wait_for(self._get(path, host), self.timeout)
        except BaseException:
            self.close()
            raise

    async def _get(self, path, host):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.addr)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self):
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


def is_hit(headers):
    return headers.get("cache-status", "").startswith("edgecache; hit")


async def settle(proxy, baseline, limit=20.0):
    """Waits (bounded) until the proxy's file descriptors are back to the baseline; the stats then."""
    deadline = time.monotonic() + limit
    while True:
        now = proxy.stats()
        if now["fds"] <= baseline["fds"] or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.25)


def fmt_stats(s):
    return f"{s['fds']} fds, {s['threads']} threads, {s['rss_kib'] / 1024:.1f} MiB RSS"


# --------------------------------------------------------------------------------------------
# The soaks: each returns (met, figures)
# --------------------------------------------------------------------------------------------


async def hot_set(binary, workdir, duration):
    body = b"h" * 1024
    mode = {"answer": 200}

    def handler(method, path, headers):
        if mode["answer"] != 200:
            return mode["answer"], [("cache-control", "no-store")], b"down"
        return 200, [("cache-control", "max-age=1, stale-if-error=3600"), ("etag", '"v1"')], body

    origin = Origin(handler)
    await origin.start()
    proxy = Proxy(binary, workdir, origin.port,
                  '[timeouts]\nidle = "1s"\nconnect = "300ms"\nfirst_byte = "2s"\nclient_idle = "3s"\n')
    await proxy.start()
    keys = [f"/hot/{i}" for i in range(200)]
    primer = Client(proxy.addr)
    for k in keys:
        status, _, _ = await primer.get(k)
        assert status == 200, (k, status)
    primer.close()
    await asyncio.sleep(2.5)  # the pool's idle origin connections close (idle 1 s, checked 1-1.25x)
    baseline = proxy.stats()
    deadline = time.monotonic() + duration
    done = collections.Counter()
    errors = []
    peak = dict(baseline)

    async def user():
        c = Client(proxy.addr)
        while time.monotonic() < deadline:
            k = random.choice(keys)
            try:
                status, _, got = await c.get(k)
                if status != 200 or got != body:
                    errors.append(f"{k}: {status}")
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(f"{k}: {type(e).__name__}")
            done["requests"] += 1
        c.close()

    async def flapper():
        phases = ["down", "up", "503", "up"]
        i = 0
        while time.monotonic() < deadline - 1.5:
            await asyncio.sleep(1.5)
            phase = phases[i % len(phases)]
            i += 1
            if phase == "down":
                await origin.stop()
            elif phase == "up":
                mode["answer"] = 200
                if not origin.server.is_serving():
                    await origin.start()
            else:
                mode["answer"] = 503
            done["flaps"] += 1
        mode["answer"] = 200
        if not origin.server.is_serving():
            await origin.start()

    async def sampler():
        while time.monotonic() < deadline:
            s = proxy.stats()
            for k in peak:
                peak[k] = max(peak[k], s[k])
            await asyncio.sleep(0.5)

    started = time.monotonic()
    await asyncio.gather(*[user() for _ in range(32)], flapper(), sampler())
    elapsed = time.monotonic() - started
    after = await settle(proxy, baseline)
    await proxy.stop()
    await origin.stop()
    back = after["fds"] <= baseline["fds"] and after["threads"] <= baseline["threads"] \
        and after["rss_kib"] <= baseline["rss_kib"] + 16 * 1024
    met = not errors and back
    figures = (f"{done['requests']} requests on 200 primed keys in {elapsed:.0f} s "
               f"({done['requests'] / elapsed:.0f}/s), origin flapped {done['flaps']} times "
               f"(refused / 503 / up, 1.5 s each), {origin.count} origin requests, "
               f"{len(errors)} errors; baseline {fmt_stats(baseline)}, peak {fmt_stats(peak)}, "
               f"after {fmt_stats(after)}")
    if errors:
        figures += f"; first errors: {errors[:5]}"
    return met, figures


async def cache_busting(binary, workdir, duration):
    size = 8 * 1024

    def handler(method, path, headers):
        return 200, [("cache-control", "max-age=3600")], b"c" * size

    origin = Origin(handler)
    await origin.start()
    proxy = Proxy(binary, workdir, origin.port, '[cache]\nmemory = "32MiB"\n')
    await proxy.start()
    hot = [f"/user/{i}" for i in range(1000)]  # 8 MiB of the 32 MiB budget
    primer = Client(proxy.addr)
    for k in hot:
        await primer.get(k)
    primer.close()
    phase = {"name": "baseline"}
    seen = {"baseline": [0, 0], "attack": [0, 0]}
    failures = []
    attack = collections.Counter()
    third = duration / 3
    t0 = time.monotonic()
    deadline = t0 + duration

    async def user():
        c = Client(proxy.addr)
        while time.monotonic() < deadline:
            try:
                status, headers, _ = await c.get(random.choice(hot))
                s = seen[phase["name"]]
                s[0] += 1
                s[1] += is_hit(headers)
                if status != 200:
                    failures.append(status)
            except Exception as e:  # noqa: BLE001
                failures.append(type(e).__name__)
        c.close()

    async def attacker():
        await asyncio.sleep(third)
        phase["name"] = "attack"
        c = Client(proxy.addr)
        while time.monotonic() < deadline:
            try:
                await c.get(f"/bust/{random.getrandbits(64):x}")
                attack["requests"] += 1
            except Exception:  # noqa: BLE001
                attack["errors"] += 1
        c.close()

    await asyncio.gather(*[user() for _ in range(8)], *[attacker() for _ in range(16)])
    stats = proxy.stats()
    await proxy.stop()
    await origin.stop()
    base = seen["baseline"][1] / max(1, seen["baseline"][0])
    under = seen["attack"][1] / max(1, seen["attack"][0])
    met = under >= 0.9 * base and not failures
    busted_mib = attack["requests"] * size / MiB
    figures = (f"users' hit ratio {base:.4f} before the attack ({seen['baseline'][0]} requests), "
               f"{under:.4f} during it ({seen['attack'][0]} requests) = {under / max(base, 1e-9):.1%} "
               f"of baseline; attacker {attack['requests']} unique URLs ({busted_mib:.0f} MiB through a "
               f"32 MiB budget); {len(failures)} user failures; {fmt_stats(stats)} at the end")
    return met, figures


async def redis_chaos(binary, workdir, duration):
    if shutil.which("redis-server") is None:
        return False, "redis-server not found"

    def body_of(path):
        return (path.encode() * 400)[:2048]

    def handler(method, path, headers):
        return 200, [("cache-control", "max-age=60")], body_of(path)

    origin = Origin(handler)
    await origin.start()
    redis = Redis(workdir)
    redis.start()
    proxy = Proxy(binary, workdir, origin.port,
                  f'[cache]\nmemory = "4MiB"\nmax_object_size = "64KiB"\n[redis]\nurl = "redis://127.0.0.1:{redis.port}"\nbudget = "50ms"\n')
    await proxy.start()
    keys = [f"/r/{i}" for i in range(5000)]
    deadline = time.monotonic() + duration
    done = collections.Counter()
    failures = []
    slowest = [0.0]
    events = []

    async def user():
        c = Client(proxy.addr)
        while time.monotonic() < deadline:
            k = random.choice(keys)
            t = time.monotonic()
            try:
                status, _, body = await c.get(k)
                if status != 200 or body != body_of(k):
                    failures.append(f"{k}: {status}")
            except Exception as e:  # noqa: BLE001
                failures.append(f"{k}: {type(e).__name__}")
            slowest[0] = max(slowest[0], time.monotonic() - t)
            done["requests"] += 1
        c.close()

    async def chaos():
        step = max(1.0, duration / 8)
        while time.monotonic() < deadline - 3 * step:
            await asyncio.sleep(step)
            # In a thread: the driver's clients and origin share this event loop, and must not
            # stall while redis-server dies or starts.
            await asyncio.to_thread(redis.kill)
            events.append("kill")
            await asyncio.sleep(step)
            await asyncio.to_thread(redis.start)
            events.append("restart")
            await asyncio.sleep(step)
            redis.proc.send_signal(signal.SIGSTOP)
            events.append("pause")
            await asyncio.sleep(step)
            redis.proc.send_signal(signal.SIGCONT)
            events.append("resume")

    await asyncio.gather(*[user() for _ in range(16)], chaos())
    await proxy.stop()
    await origin.stop()
    redis.kill()
    met = not failures
    figures = (f"{done['requests']} requests on 5,000 keys of 2 KiB (10 MiB: past the 4 MiB memory tier) "
               f"through {len(events)} Redis events ({', '.join(events)}); {len(failures)} failed; "
               f"slowest {slowest[0] * 1000:.0f} ms; {origin.count} origin requests")
    if failures:
        figures += f"; first failures: {failures[:5]}"
    return met, figures


async def expiry_storm(binary, workdir, duration):
    max_age = 2

    def handler(method, path, headers):
        etag = '"e"'
        if headers.get("if-none-match") == etag:
            return 304, [("cache-control", f"max-age={max_age}"), ("etag", etag)], b""
        return 200, [("cache-control", f"max-age={max_age}"), ("etag", etag)], b"s" * 512

    origin = Origin(handler)
    await origin.start()
    proxy = Proxy(binary, workdir, origin.port, "")
    await proxy.start()
    keys = [f"/e/{i}" for i in range(500)]
    primer = Client(proxy.addr)
    for k in keys:  # every key stored within the same second or two: they expire together
        await primer.get(k)
    primer.close()
    for k in keys:
        origin.per_path[k].clear()
    deadline = time.monotonic() + duration
    done = collections.Counter()
    failures = []

    async def user():
        c = Client(proxy.addr)
        while time.monotonic() < deadline:
            k = random.choice(keys)
            try:
                status, _, _ = await c.get(k)
                if status != 200:
                    failures.append(status)
            except Exception as e:  # noqa: BLE001
                failures.append(type(e).__name__)
            done["requests"] += 1
        c.close()

    await asyncio.gather(*[user() for _ in range(64)])
    await proxy.stop()
    await origin.stop()
    # A response lives max_age seconds from its Date, a whole second: 1 to 2 s here. Two origin
    # requests for one key less than 1 s apart would be two for one expiry.
    too_close = 0
    per_key = []
    for k in keys:
        times = origin.per_path[k]
        per_key.append(len(times))
        too_close += sum(1 for a, b in zip(times, times[1:]) if b - a < max_age - 1)
    expiries = duration / max_age
    met = too_close == 0 and not failures
    figures = (f"{done['requests']} requests on 500 keys of max-age={max_age} for {duration:.0f} s "
               f"(~{expiries:.0f} expiries each), 64 connections; origin requests per key: "
               f"min {min(per_key)}, max {max(per_key)}, mean {sum(per_key) / len(per_key):.1f}; "
               f"{too_close} pairs of origin requests for one key within one lifetime; "
               f"{len(failures)} failed")
    return met, figures


async def conn_abuse(binary, workdir, duration):
    def handler(method, path, headers):
        return 200, [("cache-control", "max-age=60")], b"n" * 256

    origin = Origin(handler)
    await origin.start()
    proxy = Proxy(binary, workdir, origin.port,
                  '[timeouts]\nheader_read = "2s"\nrequest_body = "2s"\nclient_idle = "5s"\n'
                  '[limits]\nmax_connections = 512\n')
    await proxy.start()
    host, port = proxy.addr
    deadline = time.monotonic() + duration
    abuse = collections.Counter()
    served, failures, slowest = [0], [], [0.0]

    async def abuser(kind):
        while time.monotonic() < deadline:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            except Exception:  # noqa: BLE001 - refused or queued past 5 s: try again
                abuse[kind + " connect failures"] += 1
                await asyncio.sleep(0.1)
                continue
            abuse[kind] += 1
            try:
                if kind == "slowloris":
                    w.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
                    while time.monotonic() < deadline:
                        w.write(b"X-A: b\r\n")
                        await w.drain()
                        await asyncio.sleep(0.5)
                elif kind == "silent":
                    await asyncio.wait_for(r.read(1), max(0.1, deadline - time.monotonic()))
                elif kind == "half-body":
                    w.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nabc")
                    await asyncio.wait_for(r.read(), max(0.1, deadline - time.monotonic()))
                elif kind == "garbage":
                    for _ in range(20):
                        w.write(b"GARBAGE \x00\x01 /\r\n\r\n")
                        await w.drain()
                        await asyncio.sleep(0.1)
                elif kind == "h2-half-preface":
                    w.write(b"PRI * HTTP/2.0\r\n\r\n")
                    await asyncio.wait_for(r.read(), max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - closed by the proxy: what it should do
                pass
            finally:
                w.transport.abort()

    async def normal():
        c = Client((host, port), timeout=15)
        while time.monotonic() < deadline:
            t = time.monotonic()
            try:
                status, _, body = await c.get(f"/n/{random.randrange(50)}")
                if status == 200 and len(body) == 256:
                    served[0] += 1
                else:
                    failures.append(status)
            except Exception as e:  # noqa: BLE001
                failures.append(type(e).__name__)
            slowest[0] = max(slowest[0], time.monotonic() - t)
            await asyncio.sleep(0.01)
        c.close()

    mix = ["slowloris"] * 150 + ["silent"] * 100 + ["half-body"] * 50 + ["garbage"] * 50 + ["h2-half-preface"] * 20
    await asyncio.gather(*[abuser(k) for k in mix], *[normal() for _ in range(8)])
    stats = proxy.stats()
    await proxy.stop()
    await origin.stop()
    met = not failures
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(abuse.items()))
    figures = (f"{len(mix)} abusive connections at a time ({kinds} opened in all) next to 8 normal "
               f"clients: {served[0]} of {served[0] + len(failures)} normal requests served "
               f"({served[0] / max(1, served[0] + len(failures)):.1%}), slowest {slowest[0] * 1000:.0f} ms; "
               f"{fmt_stats(stats)} at the end")
    if failures:
        figures += f"; first failures: {failures[:5]}"
    return met, figures


async def reap():
    """Kills the children a soak left running (it failed or hit its bound before stopping them);
    their names, so that the report says so."""
    left = []
    for proc in CHILDREN:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is None:
                left.append(os.path.basename(proc.args[0]))
                proc.kill()
                proc.wait()
        elif proc.returncode is None:
            left.append("edgecache")
            proc.kill()
            await proc.wait()
    CHILDREN.clear()
    return left


SOAKS = {
    "hot-set": hot_set,
    "cache-busting": cache_busting,
    "redis-chaos": redis_chaos,
    "expiry-storm": expiry_storm,
    "conn-abuse": conn_abuse,
}


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--duration", type=float, default=60, help="seconds per soak (default 60)")
    ap.add_argument("--only", default="", help="comma-separated soak names")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(SOAKS)
    unknown = [n for n in names if n not in SOAKS]
    if unknown:
        ap.error(f"unknown soak {', '.join(unknown)}; the soaks: {', '.join(SOAKS)}")
    results = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as workdir:
            started = time.monotonic()
            try:
                # Every soak stops by itself; this bound only catches a hang.
                met, figures = await asyncio.wait_for(SOAKS[name](args.binary, workdir, args.duration),
                                                      args.duration * 3 + 120)
            except Exception as e:  # noqa: BLE001 - reported as a missed target
                met, figures = False, f"{type(e).__name__}: {e}"
            finally:
                left = await reap()
            if left:
                figures += f"; killed {', '.join(left)} left running"
            took = time.monotonic() - started
        print(f"soak {name}: {'met' if met else 'MISSED'} ({took:.0f} s): {figures}", flush=True)
        results.append(met)
    print(f"soaks: {sum(results)} of {len(results)} met their targets", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
