#!/bin/sh
# Ask the coordinator to stop the worker of one issue.
#
#   tools/stop_worker.sh [-c|--config PATH] N      (N or gh-N)
#
# Touches <trees>/gh-N/STOP. The coordinator sees it within a few seconds,
# stops the worker (SIGINT, SIGTERM, SIGKILL), keeps the worktree for
# inspection and marks the task Failed with "stopped by user". The trees
# folder comes from [paths] trees in the config (default config.toml in the
# project root), relative to the config file's folder, as the daemon reads it.
# Nothing else is read: no issue text, no GitHub.
set -eu

usage() {
    echo "usage: $0 [-c|--config PATH] ISSUE_NUMBER" >&2
    exit 2
}

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
config="$here/../config.toml"
issue=""
while [ $# -gt 0 ]; do
    case "$1" in
        -c|--config)
            [ $# -ge 2 ] || usage
            config=$2
            shift 2 ;;
        --config=*)
            config=${1#--config=}
            shift ;;
        -h|--help)
            usage ;;
        -*)
            echo "$0: unknown option $1" >&2
            usage ;;
        *)
            [ -z "$issue" ] || usage
            issue=${1#gh-}
            shift ;;
    esac
done
case "$issue" in
    ''|*[!0-9]*) usage ;;
esac
if [ ! -f "$config" ]; then
    echo "$0: config not found: $config" >&2
    exit 1
fi

# [paths] trees = "..." (or '...'); a trailing comment is allowed. The
# daemon's TOML parser is strict, so a simple reading is enough here.
trees=$(awk '
    /^[ \t]*\[/ { section = $0; gsub(/[ \t]/, "", section); next }
    section == "[paths]" && /^[ \t]*trees[ \t]*=/ {
        v = $0
        sub(/^[^=]*=[ \t]*/, "", v)
        q = substr(v, 1, 1)
        if (q == "\"" || q == "\047") { v = substr(v, 2); sub(q ".*$", "", v) }
        else { sub(/[ \t]*#.*$/, "", v); sub(/[ \t]+$/, "", v) }
        print v
        exit
    }' "$config")
[ -n "$trees" ] || trees=trees
case "$trees" in
    "~"/*) trees="$HOME/${trees#"~/"}" ;;
esac
case "$trees" in
    /*) ;;
    *) trees="$(CDPATH= cd -- "$(dirname -- "$config")" && pwd)/$trees" ;;
esac

tree="$trees/gh-$issue"
if [ ! -d "$tree" ]; then
    echo "$0: no worktree for gh-$issue at $tree (is it running?)" >&2
    exit 1
fi
touch "$tree/STOP"
echo "stop requested for gh-$issue: created $tree/STOP; the coordinator stops the worker within a few seconds and keeps the worktree"
