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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from adws.tasks import STAGE_NAME_RE

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

# Built-in workflows. "build" is one worker run, exactly what the
# coordinator did before workflows existed: its template is [paths] template.
# "plan-build-review" adds the shipped stages/plan.md and stages/review.md,
# found beside this project's code, so it works with any config file (one
# written before workflows existed too).
BUILD = "build"
BUILTIN_STAGES = ("plan", BUILD, "review")
BUILTIN_WORKFLOWS = {BUILD: (BUILD,), "plan-build-review": BUILTIN_STAGES}
SHIPPED_STAGES = Path(__file__).resolve().parent.parent / "stages"

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
    # The workflow an issue runs when no trusted `workflow:<name>` label picks
    # one; the workflows and stages themselves are tables ([workflows.<name>],
    # [stages.<name>]) checked against WORKFLOW_SCHEMA and STAGE_SCHEMA below.
    "workflow": {
        "default": (BUILD, _STR),
        "review_rounds": (1, _INT),
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

# [workflows.<name>] and [stages.<name>]: one table per workflow or stage.
# A stage key left out takes the value of the [workers] or [budget] key of
# the same name (None below), so a stage is only what differs.
WORKFLOW_SCHEMA: Dict[str, Tuple[Any, str]] = {
    "stages": (None, _STRLIST),
}
STAGE_SCHEMA: Dict[str, Tuple[Any, str]] = {
    "template": (None, _STR),        # default: [paths] template (build), the shipped one (plan, review), else stages/<name>.md
    "model": ("", _STR),             # "" = the CLI's own choice; else passed as --model
    "max_turns": (None, _INT),       # [workers] max_turns
    "per_run_usd": (None, _NUM),     # [budget] per_run_usd
    "timeout": (None, _NUM),         # [workers] timeout
    "command": (None, _STRLIST),     # [workers] command
    "resume": (False, _BOOL),        # continue the previous stage's CLI session (--resume)
}
TABLE_SECTIONS = {"workflows": WORKFLOW_SCHEMA, "stages": STAGE_SCHEMA}
# "blocked" is what adws/workflow.next_stage says when a workflow stops.
RESERVED_STAGE_NAMES = ("blocked",)
_WORKFLOW_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,59}")  # also a label: workflow:<name>
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,199}")


@dataclass(frozen=True)
class Stage:
    """One stage as a worker runs it, every value resolved: what the
    [stages.<name>] table says, else the [workers]/[budget] default."""
    name: str
    template_path: Path
    model: str                 # "" = the CLI's default model
    max_turns: int             # 0 = no limit
    per_run_usd: float         # 0 = no limit
    timeout: float
    command: Tuple[str, ...]
    resume: bool

    @property
    def argv_command(self) -> List[str]:
        """The stage's command with its model: what [workers] command is for Config.for_stage."""
        return list(self.command) + (["--model", self.model] if self.model else [])

# A claim is renewed every lease_ttl / 3 and its worker stopped once 2/3 of
# the lease passed unrenewed: the last third must cover the clock difference
# between nodes (seconds, with NTP) and the stop itself.
MIN_LEASE_TTL = 10


# A key's Config field is the key itself, except where a bare name would
# be ambiguous.
_FIELD = {("repo", "path"): "repo_path", ("paths", "tasks"): "tasks_path", ("paths", "template"): "template_path",
          ("workflow", "default"): "default_workflow",
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
    default_workflow: str
    review_rounds: int
    cluster_enabled: bool  # [cluster] present: claim each issue on the remote before running it
    # Every workflow by name, its stages resolved and in order; "build" is
    # always there (one stage). `stages` holds every defined stage by name.
    workflows: Dict[str, List[Stage]]
    stages: Dict[str, Stage]

    def workflow(self, name: str = "") -> List[Stage]:
        """A workflow's stages; "" is the default. Raises KeyError for a
        name this config does not define (a label naming an unknown one)."""
        return self.workflows[name or self.default_workflow]

    def for_stage(self, stage: Stage) -> "Config":
        """This config as one stage's worker sees it: the stage's command
        (with --model), template, max_turns, per_run_usd and timeout in
        place of the global ones, so worker_argv(), build_prompt() and the
        supervision checks need no second code path."""
        return replace(self, command=stage.argv_command, template_path=stage.template_path,
                       max_turns=stage.max_turns, per_run_usd=stage.per_run_usd, timeout=stage.timeout)
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
        return self.logs / transcript_name(issue)

    def stderr_path(self, issue: int) -> Path:
        return self.logs / f"gh-{issue}.stderr.log"

    def prompt_path(self, issue: int) -> Path:
        return self.logs / f"gh-{issue}.prompt.md"


def transcript_name(issue: int) -> str:
    """A transcript's file name in [paths] logs (the tools find it without a whole config)."""
    return f"gh-{issue}.jsonl"


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
    data = _read_toml(path, name)
    values, tables = _read_values(name, data)

    def get(section: str, key: str) -> Any:
        default = CONFIG_SCHEMA[section][key][0]
        return values.get(f"{section}.{key}", default)

    repo, label, prefix = _check_values(name, get, need_repo)

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
    stages = _stages(name, tables["stages"], fields, rel)
    workflows = _workflows(name, tables["workflows"], stages)
    default = fields["default_workflow"]
    if default not in workflows:
        raise ConfigError(f"{name}: [workflow] default names no workflow: {default!r} "
                          f"(defined: {', '.join(workflows)})")
    # The shipped templates are checked when the default workflow runs them;
    # otherwise when a stage starts (an issue labelled for that workflow).
    for stage in workflows[default]:
        if stage.name != BUILD and not stage.template_path.is_file():
            raise ConfigError(f"{name}: [workflow] default {default!r}: stage {stage.name}'s template "
                              f"{stage.template_path} not found (set [stages.{stage.name}] template)")
    return Config(file=path, workflows=workflows, stages=stages, **fields)


def _read_toml(path: Path, name: str) -> Dict[str, Any]:
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
    return data


def _read_values(name: str, data: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Dict[str, Any]]]]:
    """Every key the file sets, as "section.key", checked against the
    schema's sections, keys and types; and the [workflows.*]/[stages.*] tables."""
    values: Dict[str, Any] = {}
    tables: Dict[str, Dict[str, Dict[str, Any]]] = {"workflows": {}, "stages": {}}
    for section, body in data.items():
        if section in TABLE_SECTIONS:
            tables[section] = _read_tables(name, section, body)
            continue
        if section not in CONFIG_SCHEMA:
            known = ", ".join(list(CONFIG_SCHEMA) + [f"{s}.<name>" for s in TABLE_SECTIONS])
            raise ConfigError(f"{name}: unknown section [{section}] (known: {known})")
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
    return values, tables


def _check_values(name: str, get: Callable[[str, str], Any], need_repo: bool) -> Tuple[str, str, str]:
    """The checks across keys and of their ranges; returns the repository,
    the label and the branch prefix as they will be used."""
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
    if get("workflow", "review_rounds") < 0:
        raise ConfigError(f"{name}: [workflow] review_rounds must be 0 (never build again) or more")
    return repo, label, prefix


# -- Workflows and stages -------------------------------------------------------

def _read_tables(name: str, section: str, body: Any) -> Dict[str, Dict[str, Any]]:
    """[<section>.<name>] tables: each key known and of its type."""
    schema = TABLE_SECTIONS[section]
    if not isinstance(body, dict):
        raise ConfigError(f"{name}: {section} must be tables like [{section}.<name>], not a value")
    out: Dict[str, Dict[str, Any]] = {}
    for item, table in body.items():
        where = f"[{section}.{item}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: [{section}] {item} must be a table {where}, not a value")
        pattern = STAGE_NAME_RE if section == "stages" else _WORKFLOW_NAME_RE
        if not pattern.fullmatch(item):
            raise ConfigError(f"{name}: {where}: a {section[:-1]} name is lowercase letters, digits, - and _, "
                              f"starting with a letter (at most {40 if section == 'stages' else 60})")
        for key, value in table.items():
            if key not in schema:
                raise ConfigError(f"{name}: unknown key {where} {key} (known: {', '.join(schema)})")
            if not _check_type(value, schema[key][1]):
                raise ConfigError(f"{name}: {where} {key} must be a {schema[key][1]}, got {value!r}")
        out[item] = table
    return out


def _stages(name: str, tables: Dict[str, Dict[str, Any]], fields: Dict[str, Any], rel) -> Dict[str, Stage]:
    """Every stage resolved: the built-in ones, changed by their tables if
    any, then the file's own. A template the file names (or a stage of its
    own implies: stages/<name>.md) must exist; the built-in defaults are
    checked where [paths] template always was: --check, and at each start."""
    stages: Dict[str, Stage] = {}
    for stage in list(BUILTIN_STAGES) + [s for s in tables if s not in BUILTIN_STAGES]:
        table = tables.get(stage, {})
        where = f"[stages.{stage}]"
        if stage in RESERVED_STAGE_NAMES:
            raise ConfigError(f"{name}: {where}: {stage!r} is a reserved word, not a stage name")
        if "template" in table or stage not in BUILTIN_STAGES:
            template = rel(table.get("template", f"stages/{stage}.md"))
            if not template.is_file():
                said = "template" if "template" in table else "template (default stages/<name>.md)"
                raise ConfigError(f"{name}: {where} {said}: {template} not found")
        elif stage == BUILD:
            template = fields["template_path"]
        else:
            template = SHIPPED_STAGES / f"{stage}.md"
        model = table.get("model", "")
        if model and not _MODEL_RE.fullmatch(model):
            raise ConfigError(f"{name}: {where} model must be a model name or alias such as \"opus\", got {model!r}")
        command = table.get("command", fields["command"])
        if not command:
            raise ConfigError(f"{name}: {where} command must not be empty")
        timeout = float(table.get("timeout", fields["timeout"]))
        if timeout <= 0:
            raise ConfigError(f"{name}: {where} timeout must be greater than 0")
        max_turns = table.get("max_turns", fields["max_turns"])
        per_run_usd = float(table.get("per_run_usd", fields["per_run_usd"]))
        for key, value in (("max_turns", max_turns), ("per_run_usd", per_run_usd)):
            if value < 0:
                raise ConfigError(f"{name}: {where} {key} must be 0 (no limit) or more")
        stages[stage] = Stage(stage, template, model, max_turns, per_run_usd, timeout, tuple(command),
                              table.get("resume", False))
    return stages


def _workflows(name: str, tables: Dict[str, Dict[str, Any]], stages: Dict[str, Stage]) -> Dict[str, List[Stage]]:
    """Every workflow's stages. Exactly one "build" (the stage whose commits
    become the pull request, and the one a "changes" review runs again);
    "plan" only before it, "review" only after it; no stage twice."""
    flows: Dict[str, List[Stage]] = {flow: [stages[s] for s in names] for flow, names in BUILTIN_WORKFLOWS.items()}
    for flow, table in tables.items():
        where = f"[workflows.{flow}] stages"
        if flow in BUILTIN_WORKFLOWS:
            raise ConfigError(f"{name}: [workflows.{flow}] is built in ({', '.join(BUILTIN_WORKFLOWS[flow])}) "
                              f"and cannot be redefined; give yours another name")
        names = table.get("stages")
        if not names:
            raise ConfigError(f"{name}: {where} must list the workflow's stages, e.g. [\"plan\", \"build\"]")
        for stage in names:
            if stage not in stages:
                raise ConfigError(f"{name}: {where} names an unknown stage {stage!r} (defined: "
                                  f"{', '.join(stages)}; define it with [stages.{stage}])")
        twice = sorted({s for s in names if names.count(s) > 1})
        if twice:
            raise ConfigError(f"{name}: {where} lists {', '.join(twice)} twice (a review round runs build "
                              f"again by itself: see [workflow] review_rounds)")
        if BUILD not in names:
            raise ConfigError(f"{name}: {where} must include \"build\": the stage whose commits become the "
                              f"pull request")
        b = names.index(BUILD)
        if "plan" in names[b:] or "review" in names[:b]:
            raise ConfigError(f"{name}: {where} must put \"plan\" before \"build\" and \"review\" after it")
        flows[flow] = [stages[s] for s in names]
    return flows


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
