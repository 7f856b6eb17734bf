"""The documentation: what `mkdocs build --strict` (CI's docs job) cannot see. The README is not part of the
site, so its links are checked here; the CLI page is generated and must match the CLI; the API page lists
every public name."""

import importlib.util
import re
from pathlib import Path

import functional_heads as fh

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# dotted names in the docs that are not Python names: the entry-point groups and the file `fheads export` writes
NOT_PYTHON_NAMES = {"functional_heads.methods", "functional_heads.benchmarks", "functional_heads.json"}


def relative_links(text: str) -> list[str]:
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:|#", target)]


def test_the_readme_links_point_at_files_that_exist():
    links = relative_links((ROOT / "README.md").read_text())
    assert links, "the README links to the docs pages"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_relative_links_are_found_and_missing_ones_reported():
    assert relative_links("[a](docs/x.md) [b](https://x.org) [c](#here) [d](../y.png#top)") == ["docs/x.md",
                                                                                              "../y.png#top"]


def test_the_cli_page_is_what_the_cli_says():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE.read_text() == module.render(), "docs/reference/cli.md is stale: run scripts/cli_reference.py"


def test_the_api_page_lists_every_public_name():
    page = (ROOT / "docs" / "reference" / "api" / "index.md").read_text()
    missing = [name for name in fh.__all__ if not re.search(rf"fh\.{name}\b", page)]
    assert not missing, f"docs/reference/api/index.md does not list: {missing}"


def doc_texts() -> dict[str, str]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return {str(page.relative_to(ROOT)): page.read_text() for page in pages}


def resolves(dotted: str) -> bool:
    """Whether `functional_heads.a.b.c` names a module or an attribute of one."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_api_name_the_docs_write_exists():
    stale = set()
    for page, text in doc_texts().items():
        stale |= {(page, f"fh.{name}") for name in re.findall(r"\bfh\.([A-Za-z_]\w*)", text) if not hasattr(fh, name)}
        stale |= {(page, name) for name in re.findall(r"\bfunctional_heads(?:\.[A-Za-z_]\w*)+", text)
                  if name not in NOT_PYTHON_NAMES and not resolves(name)}
    assert not stale, f"names the docs use that the package no longer has: {sorted(stale)}"


def test_every_repository_path_the_docs_write_exists():
    pattern = r"`((?:functional_heads|scripts|benchmarks|training|examples|tests|docs)/[\w./-]*)"
    missing = {(page, path) for page, text in doc_texts().items() for path in re.findall(pattern, text)
               if not (ROOT / path).exists()}
    assert not missing, f"paths the docs name that do not exist: {sorted(missing)}"


def command_options() -> dict[str, set[str]]:
    """Each `fheads` command's options, from the CLI itself (`data shapes` as `data`)."""
    import typer

    from functional_heads.apps.cli import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="fheads")
    found = {}
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        commands = [command.get_command(ctx, sub) for sub in command.list_commands(ctx)] if hasattr(
            command, "list_commands") else [command]
        found[name] = {opt for cmd in commands for param in cmd.params
                       for opt in [*param.opts, *param.secondary_opts] if opt.startswith("--")} | {"--help"}
    return found


def fheads_flags(text: str) -> list[tuple[str, str]]:
    """(command, flag) for each flag written after `fheads COMMAND` on one line (continued lines joined)."""
    text = text.replace("\\\n", " ")
    pairs = []
    for match in re.finditer(r"fheads (?:--debug )?([a-z]+)([^`\n]*)", text):
        rest = re.split(r"\s(?:#|&&|\||;)", match.group(2))[0]  # the command ends at a comment or the next one
        pairs += [(match.group(1), flag) for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest)]
    return pairs


def test_every_fheads_flag_the_docs_write_exists():
    options = command_options()
    stale = {(page, f"fheads {command} {flag}") for page, text in doc_texts().items()
             for command, flag in fheads_flags(text) if command in options and flag not in options[command]}
    assert not stale, f"flags the docs write that the CLI does not have: {sorted(stale)}"


def test_the_flag_check_reads_commands_as_written():
    assert fheads_flags("`fheads eval --model M \\\n  --bench x` and `fheads report runs/ --out r  # --nope`") == [
        ("eval", "--model"), ("eval", "--bench"), ("report", "--out")]
    assert "--gpus-per-process" in command_options()["eval"] and "--split" in command_options()["data"]


def test_the_name_and_path_checks_catch_stale_ones():
    assert resolves("functional_heads.core.heads.HeadMap.load") and resolves("functional_heads.evaluation")
    assert not resolves("functional_heads.core.heads.no_such_name") and not resolves("functional_heads.nope")
