"""The README's two commands are the contract with a newcomer; CI runs the
second one verbatim. Keep them honest."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_readme_starts_with_install_and_test_commands():
    install, test = readme_commands()
    assert "--demo" in install and "pip install" in install
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    m = re.search(r"^README_TEST_COMMAND='(.*)'$", ci, re.M)
    assert m, "README_TEST_COMMAND not found in .ci/run"
    assert m.group(1) == readme_commands()[1]


def test_every_config_key_is_documented_in_shipped_config():
    import sys
    sys.path.insert(0, str(ROOT))
    from adws.config import CONFIG_SCHEMA, load_config
    shipped = (ROOT / "config.toml").read_text()
    for section, keys in CONFIG_SCHEMA.items():
        assert f"[{section}]" in shipped
        for key in keys:
            # a comment on the key's line or on the line just above it
            assert re.search(rf"(^{key}\s*=.*#|^#.*\n{key}\s*=)", shipped, re.M), \
                f"[{section}] {key} undocumented in config.toml"
    cfg = load_config(ROOT / "config.toml")  # the shipped file is valid
    assert cfg.label == "rpi-auto" and cfg.poll_interval == 30
