#!/usr/bin/env python3
"""Runs the README's checked examples against a fresh `edgecache --demo` and compares what each
command prints with the output the README shows, so an example cannot drift from what users see.

A checked example is a ```sh block right after the line `<!-- checked -->`. In it, a line that
does not start with `#` is a command (run with bash; `localhost:8080` is replaced by the port
the proxy under test listens on); the lines `#   text` after it are what it prints: each must
be a line of the command's output (case-insensitive, surrounding spaces ignored). A note at the
end of an expected line, after two or more spaces and in parentheses, is for the reader and not
compared: `#   cache-status: edgecache; hit; ttl=59   (the second request)`. Within an expected
line, `…` stands for any text (a value that depends on the time, such as a stale entry's `ttl`);
an expected line that is only `…` (or `...`) stands for lines not compared. Other `#` lines are
comments.

Usage: scripts/check_readme.py [--binary target/release/edgecache] [README.md]
Exit status 0 when every example printed what the README says, 1 otherwise.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

NOTE = re.compile(r"\s{2,}\(.*\)\s*$")


def examples(text):
    """The checked blocks of `text`: (line number, [(command, [expected lines])])."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "<!-- checked -->":
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j >= len(lines) or lines[j].strip() != "```sh":
                raise SystemExit(f"README line {i + 1}: <!-- checked --> is not followed by a ```sh block")
            start = j + 1
            k = start
            steps = []
            while k < len(lines) and not lines[k].startswith("```"):
                line = lines[k]
                if line.startswith("#   "):
                    if not steps:
                        raise SystemExit(f"README line {k + 1}: expected output before any command")
                    want = NOTE.sub("", line[4:]).strip()
                    steps[-1][1].append(want)
                elif line.startswith("#") or not line.strip():
                    pass
                else:
                    steps.append((line, []))
                k += 1
            out.append((start, steps))
            i = k
        i += 1
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def matches(want, got_lines):
    pattern = re.compile(".*".join(re.escape(part) for part in want.lower().split("…")))
    return any(pattern.fullmatch(g.strip().lower()) for g in got_lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/edgecache")
    ap.add_argument("readme", nargs="?", default="README.md")
    args = ap.parse_args()
    text = open(args.readme, encoding="utf-8").read()
    blocks = examples(text)
    if not blocks:
        print(f"{args.readme}: no checked example (<!-- checked --> before a ```sh block)")
        return 1
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="edgecache-readme-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [args.binary, "--config", "proxy.toml", "--demo", "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    failures = 0
    checked = 0
    try:
        if not wait_listening(port, proc):
            print(f"edgecache did not start listening on 127.0.0.1:{port}; its log: {log.name}")
            return 1
        for start, steps in blocks:
            for command, expected in steps:
                run = command.replace("localhost:8080", f"127.0.0.1:{port}")
                done = subprocess.run(
                    ["bash", "-c", run], capture_output=True, text=True, timeout=60, env=dict(os.environ)
                )
                got = (done.stdout + done.stderr).replace("\r", "").splitlines()
                for want in expected:
                    if want in ("…", "..."):
                        continue
                    checked += 1
                    if not matches(want, got):
                        failures += 1
                        print(f"README line {start}: `{command}`\n  expected a line: {want}\n  got:")
                        for g in got:
                            print(f"    {g}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    if failures:
        print(f"{failures} of {checked} shown lines differ from what edgecache printed (its log: {log.name})")
        return 1
    os.unlink(log.name)
    print(f"README examples: {checked} shown lines, all as printed ({len(blocks)} blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
