"""Progress lines where there is no terminal: counted out of the whole job, in the output and a log file."""

from functional_heads.utils import progress as progress_module
from functional_heads.utils.progress import progress


def test_lines_out_of_the_whole_job_to_stderr_and_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 1e9)  # only the every-tenth lines
    log = tmp_path / "log.txt"
    with progress("shapes vanilla", total=100, completed=40, log_file=log) as advance:
        for _ in range(6):
            advance(10)
    err = capsys.readouterr().err.splitlines()
    assert "shapes vanilla: 40/100 items done, starting" in err[0]
    assert [line.split(": ", 1)[1].split(" (")[0] for line in err[1:]] == [f"{n}/100 items" for n in range(50, 101, 10)]
    assert "about" in err[1] and "left" in err[1] and "left" not in err[-1]
    assert log.read_text().splitlines() == err  # the log holds the same lines


def test_disabled_writes_nothing(capsys):
    with progress("x", total=3, enabled=False) as advance:
        advance(3)
    assert capsys.readouterr().err == ""
