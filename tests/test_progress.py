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


def test_library_bars_are_off_outside_a_terminal_and_the_callers_settings_come_back(monkeypatch):
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging

    from functional_heads.utils.progress import library_bars

    initial = hf_logging.is_progress_bar_enabled()
    try:
        monkeypatch.setattr(progress_module, "_stderr_is_terminal", lambda: False)
        for before in (True, False):  # the caller's setting, whichever it was
            (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()
            with library_bars():
                assert not hf_logging.is_progress_bar_enabled() and hub.are_progress_bars_disabled()
                with library_bars():  # nested: still off
                    assert not hf_logging.is_progress_bar_enabled()
                assert not hf_logging.is_progress_bar_enabled()
            assert hf_logging.is_progress_bar_enabled() == before and hub.are_progress_bars_disabled() != before
        hf_logging.enable_progress_bar()
        monkeypatch.setattr(progress_module, "_stderr_is_terminal", lambda: True)
        with library_bars():  # a terminal: the bars as they were
            assert hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if initial else hf_logging.disable_progress_bar)()


def test_loading_a_model_into_a_log_writes_no_carriage_return():
    """As `fheads eval ... 2> log` or a script's log: transformers' "Loading weights" bar stays out."""
    import subprocess
    import sys

    code = ("import functional_heads as fh; m = fh.load_model(fh.bundled_model_path()); "
            "from transformers.utils import logging; print(logging.is_progress_bar_enabled())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "Loading weights" not in result.stderr
    assert result.stdout.strip() == "True"  # the caller's process keeps its setting
