"""The README tells the truth about the code: its links and anchors resolve, its Layout lists every
module that exists and none that does not, its usage lines and option table name every option each
command takes (and no other) with the defaults the code has, the paths it cites exist, and the outputs
it quotes are what the filter prints. A README drifts quietly as the code moves; these keep it honest."""

import glob
import json
import os
import re

import pytest
import typer.main

from clitools import REPO, run_cli
from pipeshell_filter import cli

README = os.path.join(REPO, "README.md")
DOCS = ["README.md", "integrations/README.md", "bench/README.md", "bench/RESULTS.md", "docs/shapes.md"]
PACKAGE = os.path.join(REPO, "filter", "pipeshell_filter")
SAMPLE = os.path.join("examples", "pipeshell-sample.ndjson")


def _read(rel: str) -> str:
    with open(os.path.join(REPO, rel), encoding="utf-8") as handle:
        return handle.read()


def _without_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _section(text: str, heading: str) -> str:
    """From the heading ``heading`` (a whole line) to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index("\n" + heading + "\n") + 1
    end = re.search(r"^#{1,%d} " % level, text[start + len(heading):], re.M)
    return text[start:start + len(heading) + end.start()] if end else text[start:]


def _first_code_block(text: str) -> str:
    return text.split("```", 2)[1].split("\n", 1)[1]


README_TEXT = _read("README.md")
USAGE = _section(README_TEXT, "## Usage")


# ---------------------------------------------------------------------------------------------
# links and anchors


def anchors(text: str) -> set:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces to
    hyphens, a repeated one numbered."""
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", _without_code_blocks(text), re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if not count else f"{anchor}-{count}")
    return found


def test_anchors_follow_githubs_rule():
    text = "# Joining the condition: `--join window` and `--join event`\n## Heartbeats: the fleet's time\n## A\n## A\n"
    assert anchors(text) == {"joining-the-condition---join-window-and---join-event", "heartbeats-the-fleets-time",
                             "a", "a-1"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    text = _read(doc)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code_blocks(text)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        full = os.path.normpath(os.path.join(REPO, os.path.dirname(doc), path)) if path else os.path.join(REPO, doc)
        if not os.path.exists(full):
            broken.append(f"{target}: no such file")
        elif fragment and full.endswith(".md"):
            with open(full, encoding="utf-8") as handle:
                if fragment not in anchors(handle.read()):
                    broken.append(f"{target}: no such heading")
    assert not broken, f"{doc}: {broken}"


# ---------------------------------------------------------------------------------------------
# Layout


def layout_entries():
    """(path under filter/pipeshell_filter, line) for every name the Layout's package outline gives."""
    block = _first_code_block(_section(README_TEXT, "## Layout"))
    lines = block.splitlines()
    assert lines[0] == "filter/pipeshell_filter/"
    parents, found = [], []
    for line in lines[1:]:
        if not line.startswith(" "):
            break  # tests/, examples/, ...: the repository's top level
        names = re.match(r"( +)({0}(?:, {0})*)(?: |$)".format(r"(?:[\w.]+\.(?:py|yml|txt|json)|\w+/)"), line)
        if not names:
            continue  # a description's second line
        depth = len(names.group(1)) // 2 - 1
        del parents[depth:]
        for name in names.group(2).split(", "):
            found.append(("/".join(parents + [name.rstrip("/")]), line))
        if names.group(2).endswith("/"):
            parents.append(names.group(2).rstrip("/"))
    return found


def package_entries():
    """What the Layout must name: every directory, and every file of a directory of modules but the
    packages' __init__.py (the directory's own line says what it is)."""
    found = set()
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(root, PACKAGE).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        found.update(prefix + d for d in dirs)
        if any(f.endswith(".py") for f in files):
            found.update(prefix + f for f in files if f != "__init__.py" and not f.endswith(".pyc"))
    return found


def test_the_layout_outline_is_read():
    listed = dict(layout_entries())
    assert {"values.py", "sigma", "sigma/rule.py", "correlate/__init__.py", "io/stream.py", "cli.py"} <= set(listed)


def test_every_module_is_in_the_layout():
    missing = package_entries() - {path for path, _ in layout_entries()}
    assert not missing, f"add these to README.md's Layout: {sorted(missing)}"


def test_everything_the_layout_lists_exists():
    gone = [line.strip() for path, line in layout_entries() if not os.path.exists(os.path.join(PACKAGE, path))]
    assert not gone, f"README.md's Layout names what no longer exists: {gone}"


def test_the_layout_names_every_bench_script():
    block = _first_code_block(_section(README_TEXT, "## Layout"))
    bench = block[block.index("\nbench/"):]
    bench = bench[:re.search(r"\n\S", bench[1:]).start() + 1]
    named = set(re.findall(r"\b(\w+\.py)\b", bench))
    scripts = {os.path.basename(p) for p in glob.glob(os.path.join(REPO, "bench", "*.py"))}
    assert named == scripts, (sorted(scripts - named), sorted(named - scripts))


# ---------------------------------------------------------------------------------------------
# options


COMMAND = typer.main.get_command(cli.app)
COMMANDS = {"": COMMAND, **COMMAND.commands}


def options_of(command) -> dict:
    return {name: param for param in command.params if getattr(param, "param_type_name", "") == "option"
            for name in param.opts if name != "--help"}


def usage_line(name: str) -> str:
    """The README's usage lines of ``pipeshell-filter NAME`` (the filter itself for "")."""
    block = [line for line in _first_code_block(USAGE).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(block) if line.startswith("pipeshell-filter ")]
    for begin, end in zip(starts, starts[1:] + [len(block)]):
        words = block[begin].split()
        if (words[1] if not words[1].startswith("[") else "") == name:
            return "\n".join(block[begin:end])
    raise AssertionError(f"no usage line for pipeshell-filter {name}")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_usage_lines_name_every_option_of_each_command_and_no_other(name):
    documented = set(re.findall(r"--[a-z][a-z-]*", usage_line(name)))
    taken = set(options_of(COMMANDS[name]))
    assert documented == taken, f"pipeshell-filter {name}: undocumented {sorted(taken - documented)}, " \
                                f"not taken {sorted(documented - taken)}"


def _table_rows() -> list:
    return [line for line in USAGE.splitlines() if line.startswith("| `--")]


def _first_cell_options(row: str) -> set:
    return set(re.findall(r"`(--[a-z][a-z-]*)", row.split(" | ")[0]))


def test_every_filter_option_is_in_the_option_table_and_every_row_is_an_option():
    rows = _table_rows()
    mentioned = {option for row in rows for option in re.findall(r"--[a-z][a-z-]*", row)}
    taken = set(options_of(COMMAND))
    assert taken <= mentioned, sorted(taken - mentioned)
    headed = {option for row in rows for option in _first_cell_options(row)}
    assert headed <= taken, sorted(headed - taken)


def _renderings(value) -> set:
    value = getattr(value, "value", value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    found = {str(value)}
    if isinstance(value, int):
        found.add(f"{value:,}")
        if value and not value % (1 << 20):
            found.add(f"{value >> 20} MiB")
    return found


@pytest.mark.parametrize("option", sorted(o for o, p in options_of(COMMAND).items()
                                          if p.default is not None and not isinstance(p.default, bool)))
def test_the_filters_defaults_are_the_readmes(option):
    """Each default the code gives is the one the option's table row states."""
    rows = _table_rows()
    own = [row for row in rows if option in _first_cell_options(row)]
    text = " ".join(own or [row for row in rows if re.search(re.escape(option) + r"\b(?!-)", row)]).lower()
    phrases = [phrase for value in _renderings(options_of(COMMAND)[option].default)
               for phrase in (f"default {value}", f"default `{value}`", f"`{value}` (default)",
                              f"`{option} {value}` (default)")]
    stated = [phrase for phrase in phrases if re.search(re.escape(phrase.lower()) + r"(?!\d|,\d)", text)]
    assert stated, (option, options_of(COMMAND)[option].default)


def test_runs_grace_default_is_the_integrations_readmes():
    grace = options_of(COMMANDS["run"])["--grace"].default
    stated = re.search(r"`--grace` seconds \(default (\d+)\)", _read("integrations/README.md"))
    assert stated and int(stated.group(1)) == grace


# ---------------------------------------------------------------------------------------------
# paths, quick start, quoted output


def cited_paths() -> list:
    """Repository paths README.md writes out (not ../shared's, not those under a directory of their own)."""
    found = set(re.findall(r"(?<![\w/.-])((?:tests|bench|examples|docs|integrations|filter)/[\w./*-]*[\w*])",
                           README_TEXT))
    found |= {"filter/pipeshell_filter/" + path for path in
              re.findall(r"(?<![\w/.-])((?:io|sigma|events|correlate|schema)/[\w*.-]+\.(?:py|yml|json))", README_TEXT)}
    return sorted(found)


def test_every_path_the_readme_cites_exists():
    assert len(cited_paths()) > 40
    missing = [path for path in cited_paths() if not glob.glob(os.path.join(REPO, path))]
    assert not missing, missing


def test_every_recipe_the_integrations_readme_names_exists():
    text = _read("integrations/README.md")
    named = set(re.findall(r"(?<![\w/.-])((?:vector|fluent-bit)/[\w.-]+\.ya?ml)", text))
    assert named
    missing = [path for path in named if not os.path.exists(os.path.join(REPO, "integrations", path))]
    assert not missing, missing


def test_the_quick_start_runs_what_ci_runs_on_files_in_the_clone():
    commands = re.findall(r"```sh\n(.*?)\n```", _section(README_TEXT, "## Quick start"), re.S)
    assert len(commands) == 2
    assert commands[0].endswith(f"pipeshell-filter --input {SAMPLE}") and os.path.isfile(os.path.join(REPO, SAMPLE))
    ci = [line for line in _read(".ci/run").splitlines() if line.startswith("python3 -m venv")]
    assert ci and ci[0].replace("pip install -q ", "pip install ") == commands[1]
    assert os.path.isfile(os.path.join(REPO, "examples", "generate.py"))


def test_the_summary_line_quoted_is_the_quick_starts():
    result = run_cli(["--input", os.path.join(REPO, SAMPLE)])
    quoted = re.search(r"The line reads `(pipeshell-filter: [^`]+)`", USAGE).group(1)
    assert result.returncode == 0
    assert result.stderr.decode().splitlines() == [quoted]


def test_the_explain_example_is_what_explain_prints():
    example = re.search(r"```\n\$ pipeshell-filter (explain --events [^\n]+)\n(.*?)```", USAGE, re.S)
    command, events, path = example.group(1).split()
    result = run_cli([command, events, os.path.join(REPO, path)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == example.group(2)


def _keys(listing: str) -> list:
    """The keys of a README listing such as ``{"id", "type": "rule"\\|"correlation"}``, in order."""
    return [key.split(":")[0].strip().strip('"') for key in listing.split(",")]


def test_the_stats_record_and_rule_stats_hold_the_keys_the_readme_lists(tmp_path):
    stats_row = next(row for row in _table_rows() if row.startswith("| `--stats-interval"))
    rule_stats_row = next(row for row in _table_rows() if row.startswith("| `--rule-stats"))
    table = tmp_path / "rules.ndjson"
    result = run_cli(["--stats-interval", "100", "--rule-stats", str(table), "--input", os.path.join(REPO, SAMPLE)])
    assert result.returncode == 0, result.stderr
    stats = [json.loads(line) for line in result.stdout.splitlines() if b'"metric"' in line][-1]
    assert list(stats["pipeshell"]) == _keys(re.search(r'"pipeshell": \{([^{}]+)\}', stats_row).group(1))
    listed_rule = re.search(r"each `\{([^{}]+)\}`", stats_row).group(1)
    assert list(stats["pipeshell"]["rules"][0]) == _keys(listed_rule)
    line = json.loads(table.read_text().splitlines()[0])
    assert list(line) == _keys(re.search(r"`\{([^{}]+)\}`", rule_stats_row).group(1))
