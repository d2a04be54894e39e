#!/usr/bin/env python3
"""Score HTTP cache test results (test id -> true | [errorName, message]) against the suite's
test catalogue, and compare the pass counts with a floor file.

Usage: conformance_score.py RESULTS.json CATALOG.json [--list fail,setup_fail]
                            [--floor FILE [--update-floor]]

The catalogue (written by scripts/conformance.sh from the suite's tests/*.mjs) gives each test's
group, kind and depends_on. Outcomes follow the suite's own determineTestResult():
  dependency_fail  a test in depends_on did not pass (checked first: it overrides the result)
  setup_fail       ["Setup", msg] (retry: ["Setup", "retry"], the cache retried a request)
  harness_fail     ["AbortError", ...]: a request timed out
  pass             result true; otherwise fail (required), optional_fail (optimal), no (check)
  untested         no result
Exit status 1 when the required or optimal passes are below the floor.
"""
import argparse
import json
import sys
from collections import Counter

KINDS = ('required', 'optimal', 'check')
OUTCOMES = ('pass', 'fail', 'optional_fail', 'yes', 'no', 'dependency_fail', 'setup_fail',
            'retry', 'harness_fail', 'untested')
GOOD = ('pass', 'yes')
FLOORED = ('required', 'optimal')


def score(results, catalog):
    """{test id: (kind, outcome, message)} for every test the CLI runs."""
    tests = {t['id']: t for g in catalog['groups'] for t in g['tests']}
    memo = {}

    def outcome(tid):
        if tid not in memo:
            test, res = tests[tid], results.get(tid)
            if res is None:
                out = 'untested'
            elif any(outcome(d) not in GOOD for d in test['depends_on'] if d in tests):
                out = 'dependency_fail'
            elif isinstance(res, list) and res[0] == 'Setup':
                out = 'retry' if res[1:2] == ['retry'] else 'setup_fail'
            elif isinstance(res, list) and res[0] == 'AbortError':
                out = 'harness_fail'
            else:
                good, bad = {'required': ('pass', 'fail'), 'optimal': ('pass', 'optional_fail'),
                             'check': ('yes', 'no')}[test['kind']]
                out = good if res is True else bad
            memo[tid] = out
        return memo[tid]

    scored = {}
    for tid, test in tests.items():
        if test['browser_only'] and tid not in results:
            continue  # the CLI never runs browser-only tests
        res = results.get(tid)
        msg = res[1] if isinstance(res, list) and len(res) > 1 else ''
        scored[tid] = (test['kind'], outcome(tid), str(msg))
    return scored


def read_floor(path):
    floor = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition('#')[0].partition('=')
                if sep:
                    floor[key.strip()] = int(value)
    except FileNotFoundError:
        pass
    return floor


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('results')
    ap.add_argument('catalog')
    ap.add_argument('--list', default='', help='outcomes to list, e.g. fail,setup_fail')
    ap.add_argument('--floor', help='file with required=N and optimal=N lines')
    ap.add_argument('--update-floor', action='store_true', help='raise the floor to these numbers')
    args = ap.parse_args()
    with open(args.results) as f:
        results = json.load(f)
    with open(args.catalog) as f:
        catalog = json.load(f)
    scored = score(results, catalog)

    listed = set(args.list.split(',')) - {''}
    for tid, (kind, out, msg) in scored.items():
        if out in listed:
            print(f'  {out:<15} {tid}: {msg}')
    shown = [o for o in OUTCOMES if any(s[1] == o for s in scored.values())]
    print(f"{'kind':<10}{'total':>6}" + ''.join(f'{o:>{max(len(o) + 2, 6)}}' for o in shown))
    for kind in KINDS:
        c = Counter(s[1] for s in scored.values() if s[0] == kind)
        print(f'{kind:<10}{sum(c.values()):>6}' + ''.join(f'{c[o]:>{max(len(o) + 2, 6)}}' for o in shown))
    passed = {k: sum(1 for s in scored.values() if s[0] == k and s[1] == 'pass') for k in FLOORED}
    for k in FLOORED:
        print(f'{k} passed: {passed[k]}/{sum(1 for s in scored.values() if s[0] == k)}')

    if not args.floor:
        return 0
    floor = read_floor(args.floor)
    below = [k for k in FLOORED if passed[k] < floor.get(k, 0)]
    for k in FLOORED:
        diff = passed[k] - floor.get(k, 0)
        print(f'floor {k}={floor.get(k, 0)}: {passed[k]} ({diff:+d})')
    if below:
        print(f'FAIL: below the floor in {args.floor}: ' +
              ', '.join(f'{k} {passed[k]} < {floor[k]}' for k in below))
        return 1
    if args.update_floor and any(passed[k] > floor.get(k, 0) for k in FLOORED):
        with open(args.floor, 'w') as f:
            f.write('# Conformance floor: scripts/conformance.sh fails when fewer tests pass.\n'
                    '# Raise it with scripts/conformance.sh --update-floor.\n')
            f.writelines(f'{k}={passed[k]}\n' for k in FLOORED)
        print(f'floor raised in {args.floor}: ' + ', '.join(f'{k}={passed[k]}' for k in FLOORED))
    return 0


if __name__ == '__main__':
    sys.exit(main())
