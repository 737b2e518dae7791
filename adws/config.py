"""config.toml: the schema, strict validation, and the one Config every part reads.

The daemon, the tools and the demo all read the same file through
`load_config`, so a path means the same thing everywhere and a mistake is
reported the same way: one line naming the file and the key or line. Unknown
keys are errors, because a typo that silently falls back to a default is the
worst kind of config bug on a machine nobody watches.
"""
from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Raspberry Pi OS Bullseye (3.9)
    import tomli as tomllib

EX_CONFIG = 78  # sysexits.h EX_CONFIG: systemd won't restart-loop on it (RestartPreventExitStatus=78)

class ConfigError(Exception):
    """A config problem, already phrased for the user: 'FILE: [section] key ...'."""


# (section, key) -> (default, type check, description). The shipped
# config.toml documents every key; this table is what the daemon enforces.
_INT, _NUM, _STR, _BOOL, _STRLIST, _INTLIST = "integer", "number", "string", "boolean", "list of strings", "list of integers"

CONFIG_SCHEMA: Dict[str, Dict[str, Tuple[Any, str]]] = {
    "github": {
        "repo": (None, _STR),
        "label": ("rpi-auto", _STR),
        "poll_interval": (30, _NUM),
        "trusted_users": ([], _STRLIST),
        "progress_every": (300, _NUM),
        "status_issue": (False, _BOOL),
        "status_issue_title": ("TAC coordinator status", _STR),
        "notify": ([], _STRLIST),
        "notify_every": (21600, _NUM),
    },
    "repo": {
        "path": (".", _STR),
        "base_branch": ("main", _STR),
        "branch_prefix": ("auto/", _STR),
        "remote": ("origin", _STR),
    },
    "workers": {
        "max_concurrent": ("auto", "\"auto\" or an integer"),
        "command": (["claude", "-p", "--output-format", "stream-json", "--verbose",
                     "--dangerously-skip-permissions"], _STRLIST),
        "timeout": (3600, _NUM),
        "startup_grace": (10, _NUM),
        "startup_backoff": ([300, 600, 1200], _INTLIST),
        "breaker_threshold": (3, _INT),
        "failure_threshold": (3, _INT),
        "max_attempts": (2, _INT),
        "retry_backoff": ([600, 1800], _INTLIST),
        "stall_timeout": (900, _NUM),
        "result_exit_grace": (30, _NUM),
        "api_retry_limit": (6, _INT),
        "stop_grace": (5, _NUM),
        "min_free_memory_mb": (1500, _INT),
        "min_free_disk_mb": (2048, _INT),
        "max_log_mb": (200, _NUM),
        "job_threads": (4, _INT),
        "max_turns": (0, _INT),
        "pass_env": ([], _STRLIST),
        "allowed_tools": ([], _STRLIST),
        "disallowed_tools": ([], _STRLIST),
    },
    "budget": {
        "daily_usd": (0, _NUM),
        "monthly_usd": (0, _NUM),
        "per_run_usd": (0, _NUM),
    },
    "paths": {
        "tasks": ("tasks.md", _STR),
        "template": ("worker_template.md", _STR),
        "trees": ("trees", _STR),
        "logs": ("logs", _STR),
        "keep_trees_days": (14, _NUM),
        "keep_logs_days": (90, _NUM),
    },
    # Follow-up runs that answer reviews on the coordinator's own pull
    # requests (adws/followup.py).
    "followup": {
        "enabled": (True, _BOOL),
        "trigger": ("@tac", _STR),
        "quiet": (60, _NUM),
        "max_rounds": (3, _INT),
        "template": ("followup_template.md", _STR),
    },
    # Opt-in: without the section, cluster_enabled is False and nothing is
    # claimed (adws/claims.py). config.toml documents it commented out.
    "cluster": {
        "node": ("", _STR),  # "" = this machine's hostname
        "lease_ttl": (600, _NUM),
        "claim_ref_prefix": ("refs/tac/claims/", _STR),
    },
}

# Sections whose presence switches a feature on: the shipped config.toml
# documents their keys commented out.
OPT_IN_SECTIONS = ("cluster",)

# A claim is renewed every lease_ttl / 3 and its worker stopped once 2/3 of
# the lease passed unrenewed: the last third must cover the clock difference
# between nodes (seconds, with NTP) and the stop itself.
MIN_LEASE_TTL = 10


# A key's Config field is the key itself, except where a bare name would
# be ambiguous.
_FIELD = {("repo", "path"): "repo_path", ("paths", "tasks"): "tasks_path", ("paths", "template"): "template_path",
          ("followup", "enabled"): "followup_enabled", ("followup", "trigger"): "followup_trigger",
          ("followup", "quiet"): "followup_quiet", ("followup", "max_rounds"): "followup_max_rounds",
          ("followup", "template"): "followup_template_path"}


@dataclass
class Config:
    """The validated configuration; paths are absolute."""
    file: Path
    repo: str
    label: str
    poll_interval: float
    trusted_users: List[str]
    progress_every: float
    status_issue: bool
    status_issue_title: str
    notify: List[str]
    notify_every: float
    repo_path: Path
    base_branch: str
    branch_prefix: str
    remote: str
    max_concurrent: Any  # "auto" or int; see worker_cap()
    command: List[str]
    timeout: float
    startup_grace: float
    startup_backoff: List[int]
    breaker_threshold: int
    failure_threshold: int
    max_attempts: int
    retry_backoff: List[int]
    stall_timeout: float
    result_exit_grace: float
    api_retry_limit: int
    stop_grace: float
    min_free_memory_mb: int
    min_free_disk_mb: int
    max_log_mb: float
    job_threads: int
    max_turns: int
    pass_env: List[str]
    allowed_tools: List[str]
    disallowed_tools: List[str]
    daily_usd: float
    monthly_usd: float
    per_run_usd: float
    tasks_path: Path
    template_path: Path
    trees: Path
    logs: Path
    keep_trees_days: float
    keep_logs_days: float
    node: str
    lease_ttl: float
    claim_ref_prefix: str
    cluster_enabled: bool  # [cluster] present: claim each issue on the remote before running it
    # [followup]: defaults here too, so a Config made by hand (a test's) need not name them.
    followup_enabled: bool = True
    followup_trigger: str = "@tac"
    followup_quiet: float = 60.0
    followup_max_rounds: int = 3
    followup_template_path: Path = Path("followup_template.md")

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def state_dir(self) -> Path:
        """tasks.md's folder: the lock, PAUSE and metrics.json live beside it."""
        return self.tasks_path.parent

    @property
    def metrics_path(self) -> Path:
        return self.state_dir / "metrics.json"

    @property
    def pause_path(self) -> Path:
        return self.state_dir / "PAUSE"

    @property
    def archive_path(self) -> Path:
        return self.state_dir / "tasks-archive.md"

    @property
    def ledger_path(self) -> Path:
        return self.logs / "usage.jsonl"

    # A task's files, named from the issue number only, never from its title.
    def worktree_path(self, issue: int) -> Path:
        return self.trees / f"gh-{issue}"

    def transcript_path(self, issue: int) -> Path:
        """The worker's stream-json output, every attempt appended."""
        return self.logs / f"gh-{issue}.jsonl"

    def stderr_path(self, issue: int) -> Path:
        return self.logs / f"gh-{issue}.stderr.log"

    def prompt_path(self, issue: int) -> Path:
        return self.logs / f"gh-{issue}.prompt.md"


def _check_type(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STRLIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == _INTLIST:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return True  # special forms are checked by hand below


def load_config(path: Path, need_repo: bool = True) -> Config:
    """Read and validate config.toml. Unknown keys are errors: a typo must
    never silently fall back to a default. The tools only need the paths and
    pass need_repo=False, so a transcript can be read before [github] is set."""
    path = Path(path).resolve()
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name}: not found (copy config.toml from the project and edit [github] repo)")
    except OSError as e:
        raise ConfigError(f"{name}: cannot read: {e.strerror}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: not UTF-8 text")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: {e}")  # tomllib names the line and column

    values: Dict[str, Any] = {}
    for section, body in data.items():
        if section not in CONFIG_SCHEMA:
            raise ConfigError(f"{name}: unknown section [{section}] (known: {', '.join(CONFIG_SCHEMA)})")
        if not isinstance(body, dict):
            raise ConfigError(f"{name}: {section} must be a [section], not a value")
        for key, value in body.items():
            if key not in CONFIG_SCHEMA[section]:
                known = ", ".join(CONFIG_SCHEMA[section])
                raise ConfigError(f"{name}: unknown key [{section}] {key} (known: {known})")
            _, kind = CONFIG_SCHEMA[section][key]
            if not _check_type(value, kind):
                raise ConfigError(f"{name}: [{section}] {key} must be a {kind}, got {value!r}")
            values[f"{section}.{key}"] = value

    def get(section: str, key: str) -> Any:
        default = CONFIG_SCHEMA[section][key][0]
        return values.get(f"{section}.{key}", default)

    repo = get("github", "repo") or ("" if need_repo else "-/-")
    if not repo:
        raise ConfigError(f"{name}: [github] repo is required, e.g. repo = \"acme/widgets\"")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        raise ConfigError(f"{name}: [github] repo must be owner/name, got {repo!r}")
    label = get("github", "label")
    if not label.strip():
        raise ConfigError(f"{name}: [github] label must not be empty")
    mc = get("workers", "max_concurrent")
    if not (mc == "auto" or (isinstance(mc, int) and not isinstance(mc, bool) and mc >= 1)):
        raise ConfigError(f"{name}: [workers] max_concurrent must be \"auto\" or an integer >= 1, got {mc!r}")
    command = get("workers", "command")
    if not command:
        raise ConfigError(f"{name}: [workers] command must not be empty")
    for section, key in (("github", "poll_interval"), ("workers", "timeout"), ("workers", "startup_grace"),
                         ("workers", "stall_timeout"), ("workers", "stop_grace")):
        if get(section, key) <= 0:
            raise ConfigError(f"{name}: [{section}] {key} must be greater than 0")
    for key in ("startup_backoff", "retry_backoff"):
        if not get("workers", key) or any(v < 0 for v in get("workers", key)):
            raise ConfigError(f"{name}: [workers] {key} must be a non-empty list of seconds >= 0")
    for section, key in (("workers", "failure_threshold"), ("workers", "min_free_disk_mb"), ("workers", "job_threads"),
                         ("workers", "max_log_mb"), ("paths", "keep_trees_days"), ("paths", "keep_logs_days")):
        if get(section, key) < 0:
            raise ConfigError(f"{name}: [{section}] {key} must be 0 (off) or more")
    if get("workers", "max_attempts") < 1:
        raise ConfigError(f"{name}: [workers] max_attempts must be at least 1")
    if not get("github", "status_issue_title").strip():
        raise ConfigError(f"{name}: [github] status_issue_title must not be empty")
    for login in get("github", "notify"):
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", login.lstrip("@")):
            raise ConfigError(f"{name}: [github] notify holds {login!r}, which is not a GitHub login")
    trigger = get("followup", "trigger")
    if not trigger.strip() or trigger != trigger.strip() or "\n" in trigger:
        raise ConfigError(f"{name}: [followup] trigger must be a phrase on one line with no space around it, "
                          f"e.g. \"@tac\", got {trigger!r}")
    if get("followup", "quiet") < 0:
        raise ConfigError(f"{name}: [followup] quiet must be 0 or more seconds")
    if get("followup", "max_rounds") < 1:
        raise ConfigError(f"{name}: [followup] max_rounds must be at least 1 (enabled = false turns "
                          "follow-ups off)")
    if get("github", "notify_every") < 0:
        raise ConfigError(f"{name}: [github] notify_every must be 0 (every time) or more")
    prefix = get("repo", "branch_prefix")
    if not re.fullmatch(r"[A-Za-z0-9._/-]*", prefix) or ".." in prefix:
        raise ConfigError(f"{name}: [repo] branch_prefix may hold only letters, digits and . _ / -, got {prefix!r}")

    named = "cluster.node" in values
    node = get("cluster", "node") if named else socket.gethostname()
    if "cluster" in data:
        _check_cluster(name, node, get("cluster", "lease_ttl"), get("cluster", "claim_ref_prefix"), named)

    base = path.parent

    def rel(p: str) -> Path:
        return (base / os.path.expanduser(p)).resolve()

    fields = {}
    for section, keys in CONFIG_SCHEMA.items():
        for key, (_, kind) in keys.items():
            v = get(section, key)
            if (section == "paths" and kind == _STR) or (section, key) in (("repo", "path"), ("followup", "template")):
                v = rel(v)
            elif kind == _NUM:
                v = float(v)
            elif isinstance(v, list):
                v = list(v)
            fields[_FIELD.get((section, key), key)] = v
    fields.update(repo=repo, label=label, branch_prefix=prefix, node=node, cluster_enabled="cluster" in data)
    return Config(file=path, **fields)


def _check_cluster(name: str, node: str, lease_ttl: float, ref_prefix: str, named: bool) -> None:
    # The node name goes into claim commits, tasks.md ("Claimed by: pi-garage")
    # and key=value log lines, so it is one plain word.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", node):
        said = f"got {node!r}" if named else f"the hostname {node!r} is not usable; set it"
        raise ConfigError(f"{name}: [cluster] node must be a name of letters, digits and . _ - "
                          f"(at most 63), {said}")
    if lease_ttl < MIN_LEASE_TTL:
        raise ConfigError(f"{name}: [cluster] lease_ttl must be at least {MIN_LEASE_TTL} seconds, got {lease_ttl!r}")
    # A prefix of git ref names (git check-ref-format's rules, kept to plain
    # characters), ending in "/" so that <prefix>gh-<N> is a ref under it.
    part = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
    if (not re.fullmatch(rf"refs/(?:{part}/)+", ref_prefix) or ".." in ref_prefix
            or any(p.endswith((".", ".lock")) for p in ref_prefix.split("/"))):
        raise ConfigError(f"{name}: [cluster] claim_ref_prefix must look like \"refs/tac/claims/\" "
                          f"(under refs/, ending in /, letters, digits and . _ -), got {ref_prefix!r}")
