#!/bin/sh
# Install the pinned Claude Code CLI into <project>/.cache/claude-cli and print its path.
#
# Why: tests/test_real_claude.py runs the REAL CLI against a local fake API.
# The version is pinned in tests/claude_cli.py (CLAUDE_CLI_VERSION, the single
# source of truth). Only the npm registry is needed: the package's native
# binary comes from a platform-specific optional dependency on the registry.
# A project-local prefix (not `npm install -g`): no root, no clash with a
# developer's own `claude`, and CI can cache .cache/claude-cli between runs.
#
# Idempotent: if the binary there already reports the pinned version, nothing
# is downloaded. Usage (CI, no shell tricks needed):  sh tests/install_claude_cli.sh
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^CLAUDE_CLI_VERSION = "\(.*\)"$/\1/p' "$root/tests/claude_cli.py")
prefix="$root/.cache/claude-cli"
bin="$prefix/node_modules/.bin/claude"

if [ -z "$version" ]; then
    echo "install_claude_cli: cannot read CLAUDE_CLI_VERSION from tests/claude_cli.py" >&2
    exit 2
fi

have() {
    [ -x "$1" ] && [ "$("$1" --version 2>/dev/null | cut -d' ' -f1)" = "$version" ]
}

if ! have "$bin"; then
    command -v npm >/dev/null 2>&1 || { echo "install_claude_cli: npm not found (install Node.js + npm)" >&2; exit 2; }
    mkdir -p "$prefix"
    echo "install_claude_cli: installing @anthropic-ai/claude-code@$version into $prefix" >&2
    npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund \
        --loglevel=error "@anthropic-ai/claude-code@$version" >&2
fi

if ! have "$bin"; then
    # postinstall (which copies the native binary over bin/claude.exe) may have
    # been skipped, e.g. by an npm that blocks install scripts: use the
    # platform package's binary directly.
    for cand in "$prefix"/node_modules/@anthropic-ai/claude-code-*/claude; do
        if have "$cand"; then
            ln -sf "$cand" "$bin"
            break
        fi
    done
fi

if ! have "$bin"; then
    echo "install_claude_cli: $bin does not report version $version" >&2
    exit 1
fi
echo "$bin"
