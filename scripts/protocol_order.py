"""Checks in git history that a protocol was committed before its results: the commit that added PROTOCOL
must be an ancestor of the first commit holding each RESULT file, and no RESULT may appear in a commit
that is not a descendant of it. Prints the timeline (every commit touching the protocol or a result) so a
reader can see which amendments came before which result. Exit 1 if the order is wrong, 2 on bad input.

    python scripts/protocol_order.py docs/protocols/lab-v2.md docs/lab-v2/*.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def commits_touching(repo: Path, path: str) -> list[str]:
    """Hashes of the commits that changed `path`, oldest first (every branch)."""
    return git(repo, "log", "--all", "--reverse", "--format=%H", "--", path).split()


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", older, newer]).returncode == 0


def check(repo: Path, protocol: str, results: list[str]) -> tuple[list[str], list[str]]:
    """(problems, timeline lines) for one protocol and its result files, paths relative to `repo`."""
    added = commits_touching(repo, protocol)
    if not added:
        return [f"{protocol} is in no commit"], []
    first = added[0]
    problems, events = [], [(c, f"protocol {protocol}" + (" (added)" if c == first else " (amended)"))
                            for c in added]
    for result in results:
        holding = commits_touching(repo, result)
        if not holding:
            problems.append(f"{result} is in no commit")
        for commit in holding:
            if not is_ancestor(repo, first, commit):
                problems.append(f"{result} is in {commit[:8]}, which does not come after the protocol's {first[:8]}")
        events += [(c, f"result {result}") for c in holding[:1]]
    order = {c: i for i, c in enumerate(git(repo, "rev-list", "--all", "--reverse", "--topo-order").split())}
    timeline = [f"{c[:8]} {git(repo, 'log', '-1', '--format=%cI', c).strip()} {what}"
                for c, what in sorted(events, key=lambda e: order.get(e[0], -1))]
    return problems, timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("protocol")
    parser.add_argument("results", nargs="+")
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    args = parser.parse_args()
    try:
        top = Path(git(args.repo, "rev-parse", "--show-toplevel").strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
        parser.error(f"{args.repo} is not inside a git checkout")
    relative = [str(Path(p).resolve().relative_to(top)) if Path(p).is_absolute() or Path(p).exists() else p
                for p in [args.protocol, *args.results]]
    problems, timeline = check(top, relative[0], relative[1:])
    print("\n".join(timeline))
    if problems:
        print("\n".join(f"wrong order: {p}" for p in problems), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {relative[0]} was committed before each of the {len(relative) - 1} results")


if __name__ == "__main__":
    main()
