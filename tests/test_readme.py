"""The README's two commands are the contract with a newcomer; CI runs the
second one verbatim. Keep them honest."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_starts_with_install_and_test_commands():
    install, test = readme_commands()
    assert "--demo" in install and "pip install" in install
    assert "pytest" in test


@pytest.mark.parametrize("with_npm", [False, True])
@pytest.mark.parametrize("with_sudo", [True, False])
def test_first_command_works_as_root_without_sudo_and_with_it(tmp_path, with_sudo, with_npm):
    """The package step of the first command, run by the real sh with a
    recording apt-get: through sudo where there is one, directly where there
    is none (root in a container or CI). It installs npm, which the second
    command's tests/install_claude_cli.sh needs, unless there is one already
    (NodeSource's nodejs brings its own and conflicts with Debian's npm)."""
    step = " && ".join(readme_commands()[0].split(" && ")[:2])  # a fresh machine has no package lists yet
    assert "apt-get update" in step and "apt-get install" in step
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    names = ["apt-get"] + (["sudo"] if with_sudo else []) + (["npm"] if with_npm else [])
    for name in names:
        tool = bindir / name
        body = '"$@"' if name == "sudo" else "true"
        tool.write_text('#!/bin/sh\necho "{} $*" >> "{}"\n{}\n'.format(name, calls, body))
        tool.chmod(0o755)
    r = subprocess.run(["/bin/sh", "-c", step], env={"PATH": str(bindir)}, capture_output=True, text=True)
    assert (r.returncode, r.stderr) == (0, "")
    update, apt = "apt-get update -qq", "apt-get install -y gh git python3-venv" + ("" if with_npm else " npm")
    assert calls.read_text().splitlines() == (["sudo " + update, update, "sudo " + apt, apt] if with_sudo
                                              else [update, apt])


def test_the_test_command_needs_only_what_the_first_command_installs():
    """tests/install_claude_cli.sh stops when npm is missing: the first
    command must install it (above), and no text may send a reader to
    install it separately."""
    script = (ROOT / "tests" / "install_claude_cli.sh").read_text()
    assert "command -v npm" in script and "sh tests/install_claude_cli.sh" in readme_commands()[1]
    assert "echo npm" in readme_commands()[0]
    flat = " ".join((ROOT / "README.md").read_text().split())
    assert not re.search(r"tests need `?npm", flat)


@pytest.mark.parametrize("doc", ["README.md", "RUNBOOK.md"])
def test_docs_run_the_tools_with_the_venvs_python(doc):
    """Commands that work after the README's own install: a bare `python`
    may be one without rich (or none at all)."""
    text = (ROOT / doc).read_text()
    bare = re.findall(r"(?<![/\w])python[0-9.]* (?:-\S+ )*(?:tools|adws)/\S+", text)
    assert bare == []
    assert ".venv/bin/python tools/status.py" in text  # the form it must use instead


def test_readme_documents_statuss_exit_codes():
    sys.path.insert(0, str(ROOT / "tools"))
    import status
    assert status.EXIT_STATUS == {"ok": 0, "warning": 1, "degraded": 1, "critical": 2}
    flat = " ".join((ROOT / "README.md").read_text().split())
    assert "0 ok, 1 warning or degraded, 2 critical" in flat


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"^README_TEST_COMMAND='(.*)'$", ci, re.M)
    assert m, "README_TEST_COMMAND not found in .ci/run"
    assert m.group(1) == readme_commands()[1]


def test_every_config_key_is_documented_in_shipped_config():
    import sys
    sys.path.insert(0, str(ROOT))
    from adws.config import CONFIG_SCHEMA, OPT_IN_SECTIONS, load_config
    shipped = (ROOT / "config.toml").read_text()
    for section, keys in CONFIG_SCHEMA.items():
        assert f"[{section}]" in shipped
        off = "# " if section in OPT_IN_SECTIONS else ""  # its presence switches it on: shipped commented out
        for key in keys:
            # a comment on the key's line or on the line just above it
            assert re.search(rf"(^{off}{key}\s*=.*#|^#.*\n{off}{key}\s*=)", shipped, re.M), \
                f"[{section}] {key} undocumented in config.toml"
    cfg = load_config(ROOT / "config.toml")  # the shipped file is valid
    assert cfg.label == "rpi-auto" and cfg.poll_interval == 30


def test_readme_reports_the_mutation_score_out_of_every_breakage():
    """The score in the README ("N of M breakages caught") is out of every
    breakage tests/mutations.py holds: whoever adds one updates it (and
    runs `tests/mutations.py` for the N)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mutations import BREAKAGES
    flat = " ".join((ROOT / "README.md").read_text().split())
    scores = [(int(a), int(b)) for a, b in re.findall(r"(\d+) of (\d+) breakages caught", flat)]
    assert len(scores) == 1, scores
    (caught, total), = scores
    assert total == len(BREAKAGES) and caught <= total
