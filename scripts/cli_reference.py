"""The command-line reference, docs/reference/cli.md, written from `fheads`'s own help (the typer app), so the
page lists exactly the commands and options the installed CLI has:

    .venv/bin/python scripts/cli_reference.py           # rewrite docs/reference/cli.md
    .venv/bin/python scripts/cli_reference.py --check   # exit 1 if the page differs from the CLI (tests do this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "cli.md"
sys.path.insert(0, str(ROOT))

HEADER = """# Command line: `fheads`

<!-- Written by scripts/cli_reference.py from the CLI's own help; edit the help texts in
functional_heads/apps/cli.py and rerun the script (tests/test_docs.py fails while this page is stale). -->

Every command reads local folders only and downloads nothing. Errors the user can fix are one `error:` line
(exit 2); `fheads --debug COMMAND ...` (or `FHEADS_DEBUG=1`) shows the traceback. Ctrl-C exits 130; the
resumable commands (`eval`, `tune`, `demo`) keep finished items, and the same command resumes.
How-to guides: [calibrate](../how-to/calibrate.md), [tune](../how-to/tune.md),
[evaluate](../how-to/evaluate.md), [export](../how-to/export-serve.md), [check](../how-to/check-a-model.md).
"""


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")


def _section(command, ctx, path: list[str]) -> list[str]:
    lines = [f"## `{' '.join(path)}`", "", _one_line(command.help), ""]
    usage = " ".join([*path, *command.collect_usage_pieces(ctx)])
    lines += ["```", usage, "```", ""]
    rows = [param.get_help_record(ctx) for param in command.params]
    rows = [row for row in rows if row]
    if rows:
        lines += ["| option | what |", "|---|---|"]
        lines += [f"| `{_cell(name)}` | {_cell(help_text)} |" for name, help_text in rows]
        lines.append("")
    if hasattr(command, "list_commands"):  # a group: its commands in the order the app declares them
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            lines += _section(sub, sub.context_class(sub, info_name=name, parent=ctx), [*path, name])
    return lines


def render() -> str:
    """The page's text, from the CLI as installed."""
    import typer

    from functional_heads.apps.cli import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="fheads")
    return "\n".join([HEADER, *_section(root, ctx, ["fheads"])]).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not what the CLI says")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            sys.exit(f"{PAGE.relative_to(ROOT)} is stale: run python scripts/cli_reference.py")
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
