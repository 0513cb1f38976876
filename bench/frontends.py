"""Rule front ends compared: pySigma (PyPI ``pysigma``) against pipeshell-filter's own loader.

    python bench/frontends.py [--sigma DIR] [--repeat 3] [--show 8] [--json FILE]

Needs an environment with pipeshell-filter's dependencies and ``pysigma`` installed; the
filter is taken from this work tree (``filter/``), so a rerun measures the code as it is now.

1. Correctness, file by file, over SigmaHQ's ``rules*`` folders and the rule and correlation
   examples of the specification (``spec/tests/schema/{rules,correlation}``):
   * pySigma: ``SigmaCollection.from_yaml``, every condition parsed (pySigma parses them only
     when asked), then each correlation's rule references resolved against every rule loaded;
   * ours: ``load_plans([file])``, i.e. parsed and compiled to matchers.
   A file counts as accepted when every document in it is.  The table splits the files into
   accepted by both / by pySigma only / by ours only / by neither, with the other side's reasons.
2. Start-up: the import of each package in a fresh interpreter (best of ``--repeat``, at least 5,
   less a bare ``python -c pass``), then the whole SigmaHQ set loaded in a fresh child process per
   run (best of ``--repeat`` wall and CPU time; peak RSS of the child), four ways: ours parsed
   only, ours parsed and compiled (what a run does), pySigma's ``load_ruleset`` with every
   condition parsed, and pySigma's ``from_dicts`` on YAML read by libyaml (as ours reads it), which
   is pySigma's own cost without its pure-Python YAML reader.  CPU times are the figures to trust
   when the machine is shared; wall times follow them only on an idle one.
"""

from __future__ import annotations

import argparse
import collections
import glob
import importlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "filter")
sys.path.insert(0, SOURCE)
DEFAULT_SIGMA = os.path.join(HERE, "..", "..", "shared", "sigma")


def rule_dirs(sigma: str) -> list:
    return sorted(glob.glob(os.path.join(sigma, "sigmahq", "rules*")))


def rule_files(sigma: str) -> list:
    files = [os.path.join(root, name) for top in rule_dirs(sigma) for root, _, names in os.walk(top)
             for name in names if name.endswith((".yml", ".yaml"))]
    for kind in ("rules", "correlation"):
        files += glob.glob(os.path.join(sigma, "spec", "tests", "schema", kind, "*.yml"))
    return sorted(files)


def first_words(message: str, path: str, words: int = 7) -> str:
    """The start of an error message, without the file's name, as a reason to group by."""
    message = message.replace(os.path.abspath(path), "").replace(path, "")
    message = re.sub(r"^rule\s*(\(document \d+\))?\s*:?\s*", "", message.strip())
    # ours names where first (selection 'x', field 'y', value 'z'): drop it, so that reasons group
    message = re.sub(r"^((selection|field|value|document) '[^']*'[,:]?\s*)+", "", message)
    message = re.sub(r"\s+in\s*$", "", message)  # pySigma appends " in <file>"
    return " ".join(message.split()[:words])


# --- correctness, per file -------------------------------------------------------------------

def ours_verdicts(files: list) -> dict:
    """file -> None (accepted) or the reason it was refused."""
    from pipeshell_filter.cli import UsageProblem, load_plans
    verdicts = {}
    for path in files:
        try:
            load_plans([path], None)
            verdicts[path] = None
        except UsageProblem as error:
            verdicts[path] = first_words(str(error), path)
        except Exception as error:  # a crash is a finding too
            verdicts[path] = f"CRASH {type(error).__name__}: {first_words(str(error), path)}"
    return verdicts


def pysigma_reason(error: Exception, path: str) -> str:
    message = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return f"{type(error).__name__}: {first_words(message, path)}"


def pysigma_parse(path: str):
    """The file's rules with every condition parsed (raises pySigma's error)."""
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaRuleLocation
    from sigma.rule import SigmaRule
    with open(path, encoding="utf-8") as handle:
        collection = SigmaCollection.from_yaml(handle.read(), source=SigmaRuleLocation(path),
                                               resolve_references=False)
    for rule in collection.rules:
        if isinstance(rule, SigmaRule):
            for condition in rule.detection.parsed_condition:
                condition.parsed  # noqa: B018  parsing happens on access
    return collection.rules


def pysigma_verdicts(files: list) -> dict:
    from sigma.collection import SigmaCollection
    from sigma.correlations import SigmaCorrelationRule
    verdicts, loaded = {}, {}
    for path in files:
        try:
            loaded[path] = pysigma_parse(path)
            verdicts[path] = None
        except Exception as error:  # pySigma's own errors, and YAML's, and any crash
            verdicts[path] = pysigma_reason(error, path)
    everything = SigmaCollection([rule for rules in loaded.values() for rule in rules], resolve_references=False)
    for path, rules in loaded.items():
        for rule in rules:
            if isinstance(rule, SigmaCorrelationRule):
                try:
                    rule.resolve_rule_references(everything)
                except Exception as error:
                    verdicts[path] = verdicts[path] or pysigma_reason(error, path)
    return verdicts


def builtin_check() -> tuple:
    from pipeshell_filter.cli import UsageProblem, load_plans
    from pipeshell_filter.sigma.rule import BUILTIN_RULE
    try:
        ours = "accepted" if load_plans(None, None) else "refused"
    except UsageProblem as error:
        ours = "refused: " + first_words(str(error), BUILTIN_RULE)
    try:
        pysigma_parse(BUILTIN_RULE)
        theirs = "accepted"
    except Exception as error:
        theirs = "refused: " + pysigma_reason(error, BUILTIN_RULE)
    return ours, theirs


def correctness(files: list, show: int) -> dict:
    ours, theirs = ours_verdicts(files), pysigma_verdicts(files)
    groups = collections.OrderedDict((name, []) for name in ("both", "pySigma only", "ours only", "neither"))
    for path in files:
        key = {(True, True): "both", (True, False): "pySigma only", (False, True): "ours only",
               (False, False): "neither"}[(theirs[path] is None, ours[path] is None)]
        groups[key].append(path)
    print(f"\nFiles: {len(files)}")
    print(f"  {'accepted by':14} {'files':>6}  reasons (the side that refused; count, example)")
    for key, paths in groups.items():
        print(f"  {key:14} {len(paths):6}")
        if key == "both":
            continue
        for side, verdicts in (("ours", ours), ("pySigma", theirs)):
            reasons = collections.Counter(verdicts[p] for p in paths if verdicts[p])
            for reason, count in reasons.most_common(show):
                example = next(p for p in paths if verdicts[p] == reason)
                print(f"  {'':14} {'':6}  {side:7} {count:5}  {reason}  [{os.path.basename(example)}]")
            if len(reasons) > show:
                print(f"  {'':14} {'':6}  {side:7} ...    {len(reasons) - show} more reasons (--show)")
    our_builtin, their_builtin = builtin_check()
    print(f"\nBuilt-in rule: ours {our_builtin}; pySigma {their_builtin}")
    return {"ours": ours, "pysigma": theirs, "groups": {k: len(v) for k, v in groups.items()},
            "builtin": {"ours": our_builtin, "pysigma": their_builtin}}


# --- start-up ---------------------------------------------------------------------------------

def load_ours_parse(dirs):
    from pipeshell_filter.sigma.rule import RuleError, load_rules, rule_files as files_of
    return sum(not isinstance(r, RuleError) for d in dirs for f in files_of(d) for r in load_rules(f))


def load_ours_plans(dirs):
    from pipeshell_filter.cli import load_plans
    return len(load_plans(dirs, None, report=lambda message: None))


def parsed_conditions(collection) -> int:
    """The rules that loaded, each condition parsed (pySigma parses them only when asked)."""
    from sigma.rule import SigmaRule
    good = 0
    for rule in collection.rules:
        try:
            for condition in (rule.detection.parsed_condition if isinstance(rule, SigmaRule) else ()):
                condition.parsed  # noqa: B018
            good += not rule.errors
        except Exception:
            pass
    return good


def load_pysigma(dirs):
    from sigma.collection import SigmaCollection
    return parsed_conditions(SigmaCollection.load_ruleset(dirs, collect_errors=True))


def load_pysigma_libyaml(dirs):
    """pySigma's own work alone: the YAML read by libyaml (as ours is), then ``from_dicts``.
    ``load_ruleset`` reads YAML with PyYAML's pure-Python loader, most of its time."""
    import yaml
    from pipeshell_filter.sigma.rule import rule_files as files_of
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaRuleLocation
    parts = []
    for path in (f for d in dirs for f in files_of(d)):
        with open(path, encoding="utf-8") as handle:
            documents = list(yaml.load_all(handle, Loader=yaml.CSafeLoader))
        parts.append(SigmaCollection.from_dicts(documents, collect_errors=True, source=SigmaRuleLocation(path),
                                                resolve_references=False))
    return parsed_conditions(SigmaCollection.merge(parts))


LOADS = {  # label -> (what the child imports first, how it loads the directories)
    "ours: parse only (load_rules)": ("pipeshell_filter.sigma.rule", load_ours_parse),
    "ours: parse + compile (load_plans)": ("pipeshell_filter.cli", load_ours_plans),
    "pySigma: load_ruleset + conditions": ("sigma.collection", load_pysigma),
    "pySigma: libyaml + from_dicts + cond.": ("sigma.collection", load_pysigma_libyaml),
}


def child(label: str, sigma: str) -> None:
    """One run in this fresh process; one JSON line on stdout."""
    module, load = LOADS[label]
    cpu = time.process_time()
    __import__(module)
    imported = time.process_time() - cpu
    rss_imported = peak_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    rules = load(rule_dirs(sigma))
    print(json.dumps({"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu, "rules": rules,
                      "import": imported, "rss_imported_mb": rss_imported,
                      "rss_mb": peak_rss_mb()}))


def environment() -> dict:
    """The children's: this work tree's filter, and bytecode cached (outside the tree) as an
    installed package has it, so that an import is not timed compiling the source."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(SOURCE), env.get("PYTHONPATH")) if p)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "pipeshell-frontends-pycache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def peak_rss_mb() -> float:
    """This process's peak RSS.  Not ru_maxrss: that carries the parent's peak over fork and exec."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def import_time(statement: str, repeat: int) -> tuple:
    """(wall, CPU) of ``python -c statement``, each the best of ``repeat``.  CPU (the child's
    user + system time) is the figure to trust on a busy machine."""
    walls, cpus = [], []
    for _ in range(repeat + 1):  # the first run also fills the bytecode cache
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], env=environment(), check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(time.perf_counter() - started)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return min(walls[1:]), min(cpus[1:])


def startup(sigma: str, repeat: int) -> dict:
    results = {}
    imports = max(repeat, 5)  # cheap, and noisy on a busy machine
    bare_wall, bare_cpu = import_time("pass", imports)
    print(f"\nImport in a fresh interpreter (best of {imports}, less `python -c pass`: "
          f"{bare_wall * 1000:.0f} ms wall, {bare_cpu * 1000:.0f} ms CPU)")
    print(f"  {'':46} {'wall ms':>8} {'CPU ms':>7}")
    for statement in ("import pipeshell_filter.cli", "import sigma.collection",
                      "import pipeshell_filter.cli, sigma.collection"):
        wall, cpu = import_time(statement, imports)
        results[statement] = {"wall": wall - bare_wall, "cpu": cpu - bare_cpu}
        print(f"  {statement:46} {(wall - bare_wall) * 1000:8.0f} {(cpu - bare_cpu) * 1000:7.0f}")
    print(f"\nLoading SigmaHQ's {len(rule_dirs(sigma))} rules* folders, a fresh process per run "
          f"(best of {repeat}; RSS is the child's peak)")
    print(f"  {'':38} {'rules':>6} {'wall s':>7} {'CPU s':>7} {'import CPU ms':>14} {'RSS MB':>7} {'after import':>12}")
    for label in LOADS:
        runs = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", label, "--sigma", sigma],
                                 env=environment(), check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        best = {"wall": min(r["wall"] for r in runs), "cpu": min(r["cpu"] for r in runs),
                "import": min(r["import"] for r in runs), "rules": runs[0]["rules"],
                "rss_mb": max(r["rss_mb"] for r in runs), "rss_imported_mb": max(r["rss_imported_mb"] for r in runs)}
        results[label] = best
        print(f"  {label:38} {best['rules']:6} {best['wall']:7.2f} {best['cpu']:7.2f} {best['import'] * 1000:14.0f} "
              f"{best['rss_mb']:7.0f} {best['rss_imported_mb']:12.0f}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sigma", default=DEFAULT_SIGMA, help="the shared sigma folder (sigmahq/, spec/)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--show", type=int, default=8, help="reasons shown per group and side")
    parser.add_argument("--json", metavar="FILE", help="also write every figure and per-file verdict here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # before anything else is imported, so that the child's import time is its own
        child(args.child, args.sigma)
        return 0
    try:
        importlib.import_module("sigma.collection")
    except ImportError:
        print("frontends.py: pysigma is not installed here (pip install pysigma; it needs Python >= 3.11)")
        return 2
    if not rule_dirs(args.sigma):
        print(f"frontends.py: no sigmahq/rules* folder under {args.sigma} (--sigma)")
        return 2
    print(f"pySigma {metadata.version('pysigma')}, pipeshell-filter from {os.path.abspath(SOURCE)}, "
          f"Python {sys.version.split()[0]}")
    report = {"correctness": correctness(rule_files(args.sigma), args.show),
              "startup": startup(args.sigma, args.repeat)}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
