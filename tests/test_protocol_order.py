"""scripts/protocol_order.py: a protocol must be in git history before every commit holding its results."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "protocol_order.py"


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def commit(repo, path, text, message):
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", path)
    git(repo, "commit", "-qm", message)


def order(repo, *paths):
    return subprocess.run([sys.executable, str(SCRIPT), *paths, "--repo", str(repo)], capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    return tmp_path


def test_results_after_the_protocol_pass_and_the_timeline_names_the_amendment(repo):
    commit(repo, "protocol.md", "question", "protocol")
    commit(repo, "protocol.md", "question, amended", "amendment")
    commit(repo, "out/e1.json", "{}", "result")
    done = order(repo, "protocol.md", "out/e1.json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in lines[:3]] == ["protocol protocol.md (added)",
                                                             "protocol protocol.md (amended)", "result out/e1.json"]


def test_a_result_committed_before_its_protocol_fails(repo):
    commit(repo, "out/e1.json", "{}", "result first")
    commit(repo, "protocol.md", "question", "protocol after")
    done = order(repo, "protocol.md", "out/e1.json")
    assert done.returncode == 1 and "does not come after the protocol" in done.stderr


def test_a_result_on_a_branch_without_the_protocol_fails(repo):
    commit(repo, "readme", "x", "root")
    git(repo, "checkout", "-qb", "side")
    commit(repo, "out/e1.json", "{}", "result on a side branch")
    git(repo, "checkout", "-q", "-")
    commit(repo, "protocol.md", "question", "protocol")
    git(repo, "merge", "-q", "--no-edit", "side")
    assert order(repo, "protocol.md", "out/e1.json").returncode == 1


def test_a_file_in_no_commit_fails(repo):
    commit(repo, "protocol.md", "question", "protocol")
    assert "is in no commit" in order(repo, "protocol.md", "out/missing.json").stderr


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_lab_v2_results_come_after_their_protocol():
    results = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "lab-v2").glob("e*.json"))
    done = order(ROOT, "docs/protocols/lab-v2.md", *results)
    assert results and done.returncode == 0, done.stderr
