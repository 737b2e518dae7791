#!/bin/sh
# Copy this checkout to a Raspberry Pi (or any Linux machine), set it up and
# install the service there.
#
#   tools/deploy_to_pi.sh [--no-service] [user@]host [path]
#   tools/deploy_to_pi.sh [--no-service] /a/local/folder
#
# path on the host defaults to tac-coordinator (in the remote user's home).
# A target with a / in it is a local folder: the same steps without ssh (to
# try the deploy, or to install on this machine).
#
# Steps: copy the checkout over ssh (a tar stream: nothing needed on the Pi
# but tar and python3-venv), leaving out git history, the venv, caches and
# the daemon's state (trees/, logs/, tasks.md and its neighbours); keep the
# target's config.toml if it has one (the first deploy copies this one);
# create the venv there and install the project into it; run
# tools/install_service.sh there with sudo (it runs --check as the remote
# user first and refuses a failing setup). --no-service stops after the venv.
# Running it again upgrades in place; workers keep running across the
# service restart.
set -eu

prog=deploy_to_pi

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 [--no-service] [user@]host [path]   or   $0 [--no-service] /local/folder" >&2
    exit 2
}

service=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --no-service) service=no; shift ;;
        -h|--help) usage ;;
        -*) echo "$prog: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] && [ $# -le 2 ] || usage
target=$1
case "$target" in
    */*) [ $# -eq 1 ] || usage; mode=local; dest=$target ;;
    *) mode=ssh; dest=${2:-tac-coordinator} ;;
esac
[ -n "$dest" ] || usage

src=$(CDPATH= cd -P -- "$(dirname -- "$0")/.." && pwd)

# What stays behind: history, environments, caches, the test suite and
# everything the daemon writes (see .gitignore).
pack() {
    tar -c -C "$src" \
        --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude='*.egg-info' \
        --exclude=./tests --exclude=./bench --exclude=./.ci \
        --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
        --exclude=./trees --exclude=./logs --exclude=./tasks.md --exclude=./tasks-archive.md \
        --exclude=./metrics.json --exclude=./PAUSE --exclude='./.tasks.md.*' --exclude='./.metrics.*' \
        .
}

# Runs on the target with the tar stream on stdin: $1 = the folder.
unpack='set -eu
mkdir -p -- "$1"
cd -- "$1"
if [ -e config.toml ]; then
    tar -x --exclude=./config.toml -f -
    echo "deploy_to_pi: kept the config.toml already in $(pwd)"
else
    tar -x -f -
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e .
echo "deploy_to_pi: $(pwd) is ready: $(.venv/bin/python --version)"'

# Runs on the target: $1 = the folder. sudo only when not root already.
install='set -eu
cd -- "$1"
$(command -v sudo || true) tools/install_service.sh'

quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

if [ "$mode" = local ]; then
    pack | sh -c "$unpack" sh "$dest" || die "copying to $dest failed (see above)"
    if [ "$service" = yes ]; then
        sh -c "$install" sh "$dest" || die "installing the service failed (see above); the copy in $dest is complete"
    fi
    where=$(CDPATH= cd -P -- "$dest" && pwd)
    echo "$prog: deployed to $where"
    echo "watch it: $(quote "$where/.venv/bin/python") $(quote "$where/tools/status.py") --watch"
    exit 0
fi

command -v ssh >/dev/null || die "ssh not found"
# ssh joins its arguments into one command line for the remote shell, so
# every piece is quoted here.
pack | ssh "$target" "sh -c $(quote "$unpack") sh $(quote "$dest")" ||
    die "copying to $target:$dest failed (see above)"
if [ "$service" = yes ]; then
    tty=""
    [ -t 0 ] && tty=-t   # sudo may ask for a password
    ssh $tty "$target" "sh -c $(quote "$install") sh $(quote "$dest")" ||
        die "installing the service on $target failed (see above); the copy in $dest is complete"
fi
echo "$prog: deployed to $target:$dest"
echo "watch it: ssh -t $target $(quote "cd $(quote "$dest") && .venv/bin/python tools/status.py --watch")"
