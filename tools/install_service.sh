#!/bin/sh
# Install the TAC coordinator as a systemd service, from this checkout.
#
#   sudo tools/install_service.sh               install (or update) and start it
#   tools/install_service.sh --print            only print the unit it would write
#   sudo tools/install_service.sh --uninstall   stop, disable and remove it
#
# Options: --user NAME (default: the user who ran sudo, else the current
# one), --unit-dir DIR (default /etc/systemd/system).
#
# The unit is coordinator.service with User=, WorkingDirectory= and
# ExecStart= filled in: the invoking user, this checkout and its
# .venv/bin/python. Before it touches systemd it runs `--check` as that
# user, in the environment the service gets (systemd's PATH, the user's
# HOME, /etc/default/tac-coordinator), and refuses if any check fails.
# Running it again is safe: an unchanged unit is left alone, a changed one
# is rewritten and the service restarted (workers keep running and are
# re-adopted, see KillMode= in the unit).
set -eu

prog=install_service
name=coordinator
unit_dir=/etc/systemd/system
env_file=/etc/default/tac-coordinator   # the unit's EnvironmentFile=
service_path=/usr/local/bin:/usr/bin:/bin  # systemd's PATH for services

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 [--print | --uninstall] [--user NAME] [--unit-dir DIR]" >&2
    exit 2
}

mode=install
user=""
while [ $# -gt 0 ]; do
    case "$1" in
        --print) mode=print; shift ;;
        --uninstall) mode=uninstall; shift ;;
        --user) [ $# -ge 2 ] || usage; user=$2; shift 2 ;;
        --user=*) user=${1#--user=}; shift ;;
        --unit-dir) [ $# -ge 2 ] || usage; unit_dir=$2; shift 2 ;;
        --unit-dir=*) unit_dir=${1#--unit-dir=}; shift ;;
        -h|--help) usage ;;
        *) echo "$prog: unknown argument $1" >&2; usage ;;
    esac
done

checkout=$(CDPATH= cd -P -- "$(dirname -- "$0")/.." && pwd)
template="$checkout/coordinator.service"
python="$checkout/.venv/bin/python"
unit="$unit_dir/$name.service"

# -- uninstall -----------------------------------------------------------------
if [ "$mode" = uninstall ]; then
    if [ ! -e "$unit" ]; then
        echo "$prog: $unit is not there; nothing to remove"
        exit 0
    fi
    [ -w "$unit_dir" ] || die "cannot write $unit_dir: run as root (sudo $0 --uninstall)"
    # Stops the daemon only (KillMode=process); to end running workers too,
    # `systemctl kill coordinator` first.
    systemctl disable --now "$name" || echo "$prog: systemctl disable failed; removing the unit anyway" >&2
    rm -f -- "$unit"
    systemctl daemon-reload
    echo "$prog: removed $unit (the checkout, its state and logs are untouched)"
    exit 0
fi

# -- who and where -------------------------------------------------------------
if [ -z "$user" ]; then
    user=${SUDO_USER:-}
    [ -n "$user" ] && [ "$user" != root ] || user=$(id -un)
fi
entry=$(getent passwd "$user") || die "no such user: $user"
home=$(printf '%s\n' "$entry" | cut -d: -f6)
if [ "$user" = root ] || [ "$(printf '%s\n' "$entry" | cut -d: -f3)" = 0 ]; then
    die "will not run the service as root (the Claude CLI refuses to, and workers would own the machine): run this with sudo from the account that owns the checkout, or pass --user NAME"
fi
case "$checkout" in
    *'"'*|*'\'*) die "the checkout path $checkout has a \" or \\ in it, which a unit cannot quote: move the checkout" ;;
esac
[ -f "$template" ] || die "no coordinator.service in $checkout"

# systemd expands %specifiers in every setting, and $VAR in ExecStart=.
unit_escape() {
    printf '%s' "$1" | sed 's/%/%%/g'
}
exec_escape() {
    printf '%s' "$1" | sed 's/%/%%/g; s/\$/$$/g'
}

render() {
    U="$user" WD=$(unit_escape "$checkout") PY=$(exec_escape "$python") HOMEDIR="$home" \
        CHECKOUT="$checkout" awk '
        BEGIN {
            print "# Written by tools/install_service.sh for " ENVIRON["U"] " from " ENVIRON["CHECKOUT"] "."
            print "# Edit coordinator.service there and run the installer again, not this copy."
            print "#"
        }
        /^User=/ { print "User=" ENVIRON["U"]; next }
        /^WorkingDirectory=/ { print "WorkingDirectory=" ENVIRON["WD"]; next }
        /^ExecStart=/ {
            sub(/^ExecStart=[^ ]+/, "")
            print "ExecStart=\"" ENVIRON["PY"] "\"" $0
            next
        }
        # The checkout must be writable (tasks.md, logs/, trees/): it is under
        # /home in the usual case; anywhere else is added here.
        /^ReadWritePaths=/ {
            c = ENVIRON["CHECKOUT"]
            if (index(c "/", "/home/") != 1) {
                w = c; gsub(/%/, "%%", w)
                print $0 " \"" w "\""
                next
            }
        }
        { print }' "$template"
}

if [ "$mode" = print ]; then
    render
    exit 0
fi

# -- install -------------------------------------------------------------------
[ -x "$python" ] || die "no venv at $checkout/.venv: cd '$checkout' && python3 -m venv .venv && .venv/bin/pip install -e ."
[ -d "$unit_dir" ] && [ -w "$unit_dir" ] || die "cannot write $unit_dir: run as root (sudo $0)"
command -v systemctl >/dev/null || die "systemctl not found: this installer needs systemd"

# The check, as the service will run: that user, systemd's PATH, the
# environment file. A missing gh login or a claude only on ~/.local/bin
# shows here, not at 3 a.m. in the journal.
set -- HOME="$home" USER="$user" LOGNAME="$user" PATH="$service_path" LANG="${LANG:-C.UTF-8}"
if [ -r "$env_file" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            [A-Za-z_]*=*) set -- "$@" "$line" ;;
        esac
    done < "$env_file"
fi
echo "$prog: checking as $user: .venv/bin/python adws/coordinator.py --config config.toml --check"
if [ "$(id -un)" = "$user" ]; then
    as_user=""
else
    command -v runuser >/dev/null || die "runuser not found (util-linux): cannot run the check as $user"
    as_user="runuser -u $user --"
fi
if ! (cd "$checkout" && $as_user env -i "$@" "$python" adws/coordinator.py --config config.toml --check); then
    die "--check failed as $user (its output is above): the service was not installed; fix that and run this again"
fi

new=$(mktemp "$unit_dir/.$name.service.XXXXXX")
trap 'rm -f -- "$new"' EXIT
render > "$new"
chmod 644 "$new"
if [ -f "$unit" ] && cmp -s "$new" "$unit"; then
    changed=no
    rm -f -- "$new"
    echo "$prog: $unit is up to date"
else
    changed=yes
    mv -f -- "$new" "$unit"
    echo "$prog: wrote $unit (User=$user, WorkingDirectory=$checkout)"
fi
trap - EXIT

systemctl daemon-reload
systemctl enable "$name"
if [ "$changed" = yes ]; then
    systemctl restart "$name"   # starts it if it was not running
else
    systemctl start "$name"     # nothing to do if it runs
fi
echo "$prog: $name is enabled and started; follow it with: journalctl -u $name -f"
