"""The README and the docs say nothing the code contradicts: every command, pipeline, environment, make
target, file, setting, dataset and link they name exists (the docs site's own links and anchors are
checked by ``make docs``, ``mkdocs build --strict``)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import unicodedata
from functools import cache
from pathlib import Path

import pytest
import yaml
from base_params import PROJECT, raw_params

PAGES = sorted([PROJECT / "README.md", PROJECT / "conf" / "README.md", *(PROJECT / "docs").glob("*.md")])
CODE = re.compile(r"```[a-z]*\n(.*?)```", re.S)
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Settings a page may name that conf/base does not have: entries of free-form maps (a model or task of your own)
# and reliability.md's example of a misspelled key.
NOT_IN_BASE = ("model_registry.", "hero_heads.named.", "data_generation.agreement", "data_generation.ioi.nprompts")
PATH_ROOTS = ("src/", "conf/", "docs/", "tests/", "benchmarks/", "examples/", "notebooks/", "data/01_raw/", ".ci/")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(PROJECT)) for p in paths]


def _code(text: str) -> list[str]:
    """Every line of the page's code blocks and every inline code span."""
    lines = [line for block in CODE.findall(text) for line in block.splitlines()]
    return lines + SPAN.findall(CODE.sub("", text))


def _commands(text: str, program: str) -> list[list[str]]:
    """Every ``program ...`` command line of the page, split like a shell would, comments dropped."""
    found = []
    for line in _code(text):
        start = line.find(f"{program} ")
        if start < 0 or (start > 0 and line[start - 1] not in " =;&("):
            continue
        try:
            words = shlex.split(line[start:], comments=True)
        except ValueError:
            continue
        found.append(words)
    return found


def _option(words: list[str], name: str) -> list[str]:
    """The values given to ``--name`` in a command line (``--name value`` or ``--name=value``)."""
    values = []
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            values.append(words[i + 1])
        elif word.startswith(f"{name}="):
            values.append(word.split("=", 1)[1])
    return values


@cache
def _pipelines() -> set[str]:
    return {p.parent.name for p in (PROJECT / "src" / "ioi_anti" / "pipelines").glob("*/pipeline.py")}


@cache
def _catalog() -> set[str]:
    names = set()
    for path in (PROJECT / "conf" / "base").glob("catalog*.yml"):
        names |= set(yaml.safe_load(path.read_text()) or {})
    return names


@cache
def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (PROJECT / "Makefile").read_text(), re.M))


def _has_setting(params: dict, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc extension (MkDocs) and GitHub make it, for plain headings."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", CODE.sub("", page.read_text()), re.M)}


def command_problems(text: str) -> list[str]:
    """Pipelines, environments, config files and make targets that a page's commands name and the project lacks."""
    problems = []
    for words in _commands(text, "kedro"):
        problems += [f"pipeline {p!r}: {' '.join(words)}" for value in _option(words, "--pipelines")
                     for p in value.split(",") if re.fullmatch(r"[a-z_]+", p) and p not in _pipelines()]
        problems += [f"--pipeline is deprecated in Kedro 1.7 (use --pipelines): {' '.join(words)}"
                     for _ in _option(words, "--pipeline")]
        problems += [f"environment {e!r}: {' '.join(words)}" for e in _option(words, "--env")
                     if not (PROJECT / "conf" / e).is_dir()]
        problems += [f"config file {c!r}" for c in _option(words, "--config")
                     if c != "run.yml" and not (PROJECT / c).is_file()]
    targets = [w[1].strip("),.;`") for w in _commands(text, "make") if len(w) > 1]
    return problems + [f"make target {t!r}" for t in targets if t not in _make_targets()]


def setting_problems(text: str) -> list[str]:
    """Settings a page names (``--params "a.b=..."``, ``runtime.dtype``, ``head_ablation.mode: screen``) that
    conf/base does not have."""
    params = raw_params()
    named = [pair.split("=")[0] for words in _commands(text, "kedro") for value in _option(words, "--params")
             for pair in value.split(",")]
    setting = re.compile(r"([a-z_]+(?:\.[a-z_0-9]+)+)(?::.*)?")
    named += [m.group(1) for span in SPAN.findall(text) if (m := setting.fullmatch(span))]
    settings = [n for n in named if n.split(".")[0] in params and not n.endswith((".py", ".yml", ".md"))]
    return [n for n in settings if not _has_setting(params, n) and not n.startswith(NOT_IN_BASE)]


def file_problems(text: str, base: Path) -> list[str]:
    """Paths in backticks and relative links (from ``base``) that name no file, folder or heading of the
    repository (templates such as ``<version>`` and globs such as ``parameters*.yml`` match at least one path)."""
    missing = []
    for span in SPAN.findall(text):
        word = span.split()[0].rstrip(",.:;") if span.split() else ""
        if not word.startswith(PATH_ROOTS) or word.startswith("conf/local/"):  # the user's own, git-ignored
            continue
        pattern = re.sub(r"<[^>]+>", "*", word).rstrip("/")
        if not any(True for _ in PROJECT.glob(pattern)):
            missing.append(word)
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        path = (base / target.split("#")[0]).resolve()
        if not path.exists():
            missing.append(target)
        elif "#" in target and path.suffix == ".md" and target.split("#")[1] not in anchors(path):
            missing.append(f"{target} (no such heading)")
    return missing


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_named_commands_settings_and_files_exist(page: Path) -> None:
    text = page.read_text()
    for check in (command_problems(text), setting_problems(text), file_problems(text, page.parent)):
        assert not check, f"{page.name} names what the project does not have: {check}"


def test_outputs_table_names_catalog_datasets() -> None:
    """Every dataset of the outputs table is in the catalog (``hero_*`` and ``name(_plot)`` patterns included)."""
    text = (PROJECT / "docs" / "running.md").read_text()
    table = text.split("## Outputs", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "catalog name" not in line]
    names = [n for row in rows if len(row) > 1 for n in SPAN.findall(row[1])]
    assert len(names) > 20
    missing = []
    for name in names:
        options = [name.replace("(_plot)", ""), name.replace("(_plot)", "_plot")] if "(_plot)" in name else [name]
        # a dataset factory ("{name}_plot") stands for every name it matches
        patterns = [re.sub(r"\{[^}]+\}", "*", entry) for entry in _catalog()]
        missing += [o for o in options if not fnmatch.filter(_catalog(), o)
                    and not any(fnmatch.fnmatch(o, pattern) for pattern in patterns if "*" in pattern)]
    assert not missing, f"the outputs table names datasets the catalog does not have: {missing}"


def test_readme_is_a_first_read() -> None:
    """At most ~150 lines, and every docs page it promises is in the site's navigation."""
    readme = (PROJECT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    nav = (PROJECT / "mkdocs.yml").read_text()
    for page in re.findall(r"\(docs/([\w-]+\.md)", readme):
        assert page in nav, f"README links docs/{page}, which the site's nav does not list"


def test_the_checks_catch_what_they_should() -> None:
    """A page naming a wrong pipeline, environment, make target, setting, file or anchor is caught."""
    page = ("```bash\nkedro run --pipelines nope --env nowhere --params runtime.nope=1\n"
            "kedro run --pipeline reporting\nmake nothing\n```\n"
            "`src/ioi_anti/nope.py`, `head_ablation.modes: screen`, [x](docs/models.md#no-such-heading), [y](nope.md)")
    assert len(command_problems(page)) == 4
    assert setting_problems(page) == ["runtime.nope", "head_ablation.modes"]
    assert len(file_problems(page, PROJECT)) == 3
    assert not file_problems("`src/ioi_anti/params.py`, [m](docs/models.md#adding-a-model)", PROJECT)
    assert slug("Screening (`mode`)") == "screening-mode"
