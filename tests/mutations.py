#!/usr/bin/env python3
"""Deliberate breakages, and whether the tests that claim them notice.

    python tests/mutations.py                 every breakage, 3 at a time
    python tests/mutations.py --list          names, files and claiming tests
    python tests/mutations.py NAME [NAME...]  only these
    python tests/mutations.py -j 4            4 at a time

Each breakage is one exact edit of one production file. For each, the
repository (its `git ls-files`, committed or not, plus the untracked files
git does not ignore) is copied to a temp dir, the edit applied there, and the
claiming tests run in the copy with this checkout's interpreter. A breakage
is "caught" when those tests fail, "survived" when they pass. An edit whose
snippet is not found exactly once is "stale" (the code moved on: refresh the
snippet). Exit status 1 when any breakage survived or is stale.

Not a test module (no test_ prefix): run on demand and in CI's slow tier,
never by the default `pytest`.

The package is installed editable from this checkout, so an import of
`adws` could resolve here rather than in the copy and every breakage would
"survive". The copy is put first on PYTHONPATH, pytest runs from the copy
without its cache, and before anything else a canary breakage that must be
caught, and an import check, prove that the copy's code is what runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)


@dataclass
class Breakage:
    name: str
    file: str
    old: str
    new: str
    tests: List[str] = field(default_factory=list)
    note: str = ""    # why there is no claiming test yet, or whose it is


C, T, G, L = "adws/coordinator.py", "adws/tasks.py", "adws/github.py", "adws/ledger.py"
GA = "adws/gates.py"
W, GO, P, F = "adws/workers.py", "adws/gitops.py", "adws/prompt.py", "adws/files.py"
DB, CH = "tools/dashboard.py", "tools/_charts.py"
S, E = "adws/steering.py", "tests/test_status_issue_e2e.py::"
FU, FT = "adws/followup.py", "tests/test_followup.py::"
FL, WE = "adws/flow.py", "tests/test_workflow_e2e.py::"
R, RE = "adws/rounds.py", "tests/test_followup_e2e.py::"
RC = "tests/test_real_cli_e2e.py::"

BREAKAGES: List[Breakage] = [
    # -- caught before issue #19 ----------------------------------------------------------
    Breakage("trust-check", C,
             'if perm in ("admin", "write", "maintain"):\n            return True',
             'if perm:\n            return True',
             ["tests/test_security.py::test_only_labels_from_writers_or_trusted_users_queue_an_issue",
              "tests/test_e2e.py::test_untrusted_label_is_ignored_and_logged_once"]),
    Breakage("worker-env-allow-list", W,
             "env = {k: v for k, v in base.items()\n           if k in _ENV_ALLOW",
             "env = {k: v for k, v in base.items()\n           if True or k in _ENV_ALLOW",
             ["tests/test_security.py::test_worker_env_function_is_an_allow_list",
              "tests/test_security.py::test_worker_env_holds_no_github_token_or_cloud_credentials"]),
    Breakage("labeller-event-ignored", C,
             'if not self.trusted(n, who, github):\n                continue',
             "if not self.trusted(n, (issue['user']['login'], 'User', ''), github):\n                continue",
             ["tests/test_security.py::test_only_labels_from_writers_or_trusted_users_queue_an_issue"]),
    Breakage("tasks-fast-path-takes-escaped-values", T,
             'and not v[0].isspace() and not v[-1].isspace() and "\\\\" not in v',
             "and not v[0].isspace() and not v[-1].isspace()",
             ["tests/test_tasks.py::test_nasty_titles_round_trip"]),
    Breakage("save-conflict-check", T,
             "            if _save(self.path, written, data):",
             "            if _save(self.path, written, _read(self.path)):",
             ["tests/test_tasks.py::test_update_reapplies_the_change_on_the_new_content"]),
    Breakage("sigchld-handler-waitpid-any", C,
             "    def _record(self, signum: int, frame: Any) -> None:\n        self.signals.append(signum)\n",
             "    def _record(self, signum: int, frame: Any) -> None:\n        self.signals.append(signum)\n"
             "        if signum == signal.SIGCHLD:\n            try:\n                os.waitpid(-1, os.WNOHANG)\n"
             "            except ChildProcessError:\n                pass\n",
             ["tests/test_processes.py::test_sigchld_handler_never_steals_an_exit_status"]),
    Breakage("breaker-threshold-off-by-one", GA,
             "            if self.errors >= self.threshold:",
             "            if self.errors > self.threshold:",
             ["tests/test_supervision.py::test_breaker_opens_after_threshold_startup_errors_then_lets_one_probe_through"]),
    Breakage("daily-budget-ignored", GA,
             'ledger.budget_block(spend, self.cfg.daily_usd or None, self.cfg.monthly_usd or None)',
             'ledger.budget_block(spend, None, self.cfg.monthly_usd or None)',
             ["tests/test_lifecycle.py::test_daily_budget_stops_spawning_and_says_why"]),
    Breakage("existing-pr-ignored", C,
             'pr_url = self.github.pull_heads().get(w.branch, "") if commits == 0 and blocked_reason is None else ""',
             'pr_url = ""',
             ["tests/test_e2e.py::test_existing_pr_for_the_branch_completes_the_task"]),
    Breakage("stop-file-ignored", C,
             'reason = stop_reason_for(w, self.flow.cfg_for(w.issue), now, s, (w.tree / "STOP").exists())',
             "reason = stop_reason_for(w, self.flow.cfg_for(w.issue), now, s, False)",
             ["tests/test_processes.py::test_stop_worker_script_stops_it_keeps_the_worktree_and_fails_the_task"]),
    Breakage("dry-run-writes-tasks-md", C,
             "        if self.dry_run:\n            return change(self.load())\n",
             "",
             ["tests/test_e2e.py::test_dry_run_spawns_nothing_and_writes_nothing"]),
    Breakage("progress-edits-off", C,
             "elif w.comment_id and self.cfg.progress_every > 0",
             "elif False and w.comment_id and self.cfg.progress_every > 0",
             ["tests/test_lifecycle.py::test_status_comment_is_edited_in_place_as_the_run_progresses"]),
    Breakage("owed-notice-never-delivered", C,
             "                self.guarded(\"outbox\", self.deliver_outbox, now)\n",
             "                pass\n",
             ["tests/test_lifecycle.py::test_label_left_on_an_ended_task_is_removed_not_rerun"]),
    Breakage("memory-guard-off", GA,
             '        if free is not None and free < self.cfg.min_free_memory_mb:',
             '        if False:',
             ["tests/test_processes.py::test_memory_guard_starts_nothing_and_says_why"]),
    Breakage("ledger-not-o-append", L,
             "os.O_WRONLY | os.O_APPEND | os.O_CREAT",
             "os.O_WRONLY | os.O_CREAT",
             ["tests/test_ledger.py::test_append_is_one_write_with_o_append"]),
    Breakage("workflows-not-held", GO,
             'HELD_PREFIXES = (".github/workflows/", ".github/actions/")',
             'HELD_PREFIXES = (".github/actions/",)',
             ["tests/test_security.py::test_branch_that_changes_ci_workflows_is_held_for_review_not_pushed"]),

    # -- survived before issue #19 ----------------------------------------------------------
    Breakage("lowercase-proxies-passed", W,
             '"NO_PROXY", "no_proxy"}',
             '"NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"}',
             ["tests/test_security.py::test_worker_env_function_is_an_allow_list",
              "tests/test_security.py::test_worker_env_holds_no_github_token_or_cloud_credentials"]),
    Breakage("save-mid-write-check-removed", T,
             "still_ours=lambda: _read(path) == expected)",
             "still_ours=None)",
             ["tests/test_tasks.py::test_save_refuses_when_a_person_saves_while_it_writes",
              "tests/test_tasks.py::test_update_reapplies_its_change_over_a_save_made_mid_write"]),
    # -- tasks.md's store: read many times, parsed once ------------------------------------
    Breakage("store-changes-the-document-it-handed-out", T,
             "doc = seen[1].copy() if seen is not None",
             "doc = seen[1] if seen is not None",
             ["tests/test_tasks.py::test_property_the_store_remembers_what_it_wrote_as_a_read_of_the_file_gives_it"]),
    Breakage("store-keeps-the-written-document-out-of-file-order", T,
             "                doc.tasks.sort(key=_section_order)\n                self._seen",
             "                self._seen",
             ["tests/test_tasks.py::test_property_the_store_remembers_what_it_wrote_as_a_read_of_the_file_gives_it"]),
    Breakage("store-misses-a-persons-edit", T,
             "        if seen is not None and data == seen[0]:\n            return seen[1], []",
             "        if seen is not None:\n            return seen[1], []",
             ["tests/test_tasks.py::test_the_store_reads_a_persons_edit_and_changes_their_version"]),
    Breakage("stage-timeout-ignored-while-it-runs", C,
             "reason = stop_reason_for(w, self.flow.cfg_for(w.issue), now,",
             "reason = stop_reason_for(w, self.cfg, now,",
             [WE + "test_a_stage_is_stopped_by_its_own_timeout_not_the_workers"]),
    Breakage("claim-whose-answer-was-lost-forgotten", C,
             "            self.cluster.unanswered(n, w.worker_id)  # in the same write: a restart knows it too\n",
             "",
             ["tests/test_cluster.py::test_a_claim_whose_answer_was_lost_is_known_as_this_nodes_own_not_a_twins"]),
    Breakage("own-hand-over-that-landed-unanswered-not-adopted", "adws/cluster.py",
             "n in starting or (mine is not None and c.worker != self.unsure.get(n)):",
             "n in starting or mine is not None:",
             ["tests/test_cluster.py::test_a_claim_whose_answer_was_lost_is_known_as_this_nodes_own_not_a_twins"]),
    Breakage("move-keeps-a-commit-the-marker-cannot-carry", T,
             "        if state != COMPLETED:\n            task.commit = \"\"\n",
             "",
             ["tests/test_tasks.py::test_property_the_store_remembers_what_it_wrote_as_a_read_of_the_file_gives_it"]),
    Breakage("readopt-trusts-an-earlier-runs-branch", C,
             "            branch = self.git.checked_out(tree) or branch\n",
             "",
             ["tests/test_processes.py::test_a_retry_killed_before_its_pid_was_written_is_judged_on_its_own_branch"]),
    Breakage("held-claim-replaced-by-an-older-read", "adws/cluster.py",
             "n in starting or (mine is not None and c.worker != self.unsure.get(n)):",
             "n in starting or (mine is not None and mine.sha == c.sha):",
             ["tests/test_cluster.py::test_a_read_older_than_the_claim_held_never_replaces_it"]),
    Breakage("u2028-u2029-not-escaped", T,
             r'_NEEDS_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")',
             r'_NEEDS_ESCAPE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\ud800-\udfff]")',
             ["tests/test_tasks.py::test_nasty_titles_round_trip",
              "tests/test_tasks.py::test_characters_that_any_reader_takes_as_a_line_break_are_escaped"]),
    Breakage("readopt-ignores-start-time", C,
             '        alive = bool(pid) and process_alive(pid, start)',
             '        alive = bool(pid) and process_alive(pid, None)',
             ["tests/test_processes.py::test_restart_never_adopts_a_reused_pid_whose_start_time_differs"]),
    Breakage("loop-sleeps-instead-of-select", C,
             "                    select.select([r], [], [], timeout)",
             "                    time.sleep(timeout)",
             ["tests/test_processes.py::test_sigchld_wakes_the_real_loop_at_once_with_a_long_tick"]),
    Breakage("breaker-never-reset-by-a-good-run", GA,
             "        self.errors = 0\n        if self.state != CLOSED:\n",
             "        if self.state != CLOSED:\n",
             ["tests/test_promises.py::test_a_good_run_resets_the_startup_error_breaker"]),
    Breakage("monthly-budget-ignored", GA,
             'ledger.budget_block(spend, self.cfg.daily_usd or None, self.cfg.monthly_usd or None)',
             'ledger.budget_block(spend, self.cfg.daily_usd or None, None)',
             ["tests/test_lifecycle.py::test_monthly_budget_stops_spawning_and_says_why"]),
    Breakage("fork-pr-counts", G,
             '        return owner.lower() == self.owner.lower()',
             '        return True',
             ["tests/test_github_client.py::test_a_forks_branch_of_the_same_name_is_not_the_tasks",
              "tests/test_github_client.py::test_pulls_for_head_checks_the_owner_itself"]),
    Breakage("422-lookup-fallback-removed", C,
             "            prs = self.github.pulls_for_head(w.branch)  # opened by an earlier, interrupted finish\n"
             "            if not prs:\n                raise\n",
             "            raise\n",
             ["tests/test_e2e.py::test_a_pr_older_than_the_recent_hundred_is_found_after_the_422"]),
    Breakage("recent-pulls-reads-every-page", G,
             "self.get_conditional(path, pages=1), PULL_KEYS)",
             "self.get_conditional(path), PULL_KEYS)",
             ["tests/test_e2e.py::test_a_run_without_commits_looks_at_one_page_of_recent_pull_requests"]),
    Breakage("dry-run-writes-the-archive", C,
             "        self._archived_day = today\n        if self.dry_run:\n            return\n",
             "        self._archived_day = today\n",
             ["tests/test_e2e.py::test_dry_run_changes_nothing_from_a_busy_state"]),
    Breakage("dry-run-comments-and-swaps-labels", "adws/outbox.py",
             '        if self.dry_run:\n            return None\n        text = redact(text)\n',
             '        text = redact(text)\n',
             ["tests/test_e2e.py::test_dry_run_changes_nothing_from_a_busy_state"]),
    Breakage("archive-only-at-start-up", C,
             '        if local_time(self.wall(now))[:10] != self._archived_day:\n            self.guarded("archive", self.archive, now)\n',
             '',
             ["tests/test_promises.py::test_completed_entries_are_archived_when_the_day_changes"]),
    Breakage("sighup-ignores-max-concurrent", C,
             '        self.cfg, self.github, self.spend, self.max_concurrent = new, github, spend, cap\n',
             '        self.cfg, self.github, self.spend = new, github, spend\n',
             ["tests/test_promises.py::test_sighup_applies_max_concurrent_and_other_keys_to_a_running_daemon"]),
    Breakage("sighup-applies-no-key", C,
             '        self.cfg, self.github, self.spend, self.max_concurrent = new, github, spend, cap\n',
             '        self.github, self.spend, self.max_concurrent = github, spend, cap\n',
             ["tests/test_promises.py::test_sighup_applies_max_concurrent_and_other_keys_to_a_running_daemon"]),
    Breakage("priority-labels-ignored", C,
             "        if m:\n            return int(m.group(1))\n    return 2",
             "        if m:\n            return 2\n    return 2",
             ["tests/test_promises.py::test_priority_labels_order_the_queue"]),
    Breakage("github-actions-not-held", GO,
             'HELD_PREFIXES = (".github/workflows/", ".github/actions/")',
             'HELD_PREFIXES = (".github/workflows/",)',
             ["tests/test_security.py::test_branch_that_changes_ci_workflows_is_held_for_review_not_pushed"]),
    Breakage("etag-never-sent", G,
             '            argv += ["-H", f"If-None-Match: {etag}"]\n',
             "            pass\n",
             ["tests/test_e2e.py::test_an_unchanged_poll_sends_the_etag_and_is_a_free_304",
              "tests/test_github_client.py::test_an_unchanged_list_costs_no_counted_request"]),
    Breakage("rate-limit-slowdown-removed", C,
             "            interval *= 4  # slow down before GitHub starts answering 403\n",
             "",
             ["tests/test_e2e.py::test_a_low_rate_limit_slows_the_polling_4x_and_the_status_line_says_so"]),
    Breakage("detail-key-case-on-slow-path", T,
             "    known = _BY_KEY.get(key.lower())",
             "    known = _BY_KEY.get(key)",
             ["tests/test_tasks.py::test_hand_written_detail_keys_are_read_on_the_slow_path"]),

    # -- more README promises ------------------------------------------------------------------
    Breakage("detail-key-tabs-not-collapsed", T,
             '    if "  " in key or "\\t" in key:',
             '    if "  " in key:',
             ["tests/test_tasks.py::test_hand_written_detail_keys_are_read_on_the_slow_path"]),
    Breakage("max-budget-usd-not-passed", W,
             '        argv += ["--max-budget-usd", f"{cfg.per_run_usd:g}"]\n',
             "        pass\n",
             ["tests/test_lifecycle.py::test_per_run_budget_stops_the_run_and_is_passed_to_the_cli"]),
    Breakage("max-turns-not-passed", W,
             '        argv += ["--max-turns", str(cfg.max_turns)]\n',
             "        pass\n",
             ["tests/test_lifecycle.py::test_per_run_budget_reaches_the_worker_argv",
              "tests/test_real_cli_e2e.py::test_real_cli_max_turns_exhaustion_fails_with_subtype"]),
    Breakage("allowed-tools-not-passed", W,
             '        argv += ["--allowedTools", ",".join(cfg.allowed_tools)]\n',
             "        pass\n",
             ["tests/test_lifecycle.py::test_tool_lists_reach_the_worker_argv"]),
    Breakage("disallowed-tools-not-passed", W,
             '        argv += ["--disallowedTools", ",".join(cfg.disallowed_tools)]\n',
             "        pass\n",
             ["tests/test_lifecycle.py::test_tool_lists_reach_the_worker_argv"]),
    Breakage("per-run-budget-not-enforced", C,
             "    if cfg.per_run_usd > 0 and summary.cost > cfg.per_run_usd:",
             "    if False:",
             ["tests/test_lifecycle.py::test_per_run_budget_stops_the_run_and_is_passed_to_the_cli"]),
    Breakage("pause-file-ignored", GA,
             '            text = self.cfg.pause_path.read_text(errors="replace").strip()\n',
             "            raise FileNotFoundError\n",
             ["tests/test_processes.py::test_pause_file_beside_tasks_md_holds_spawning"]),
    Breakage("sigusr1-ignored", C,
             "                self.c.gates.sigusr1()\n",
             "                pass\n",
             ["tests/test_processes.py::test_sigusr1_toggles_pause_and_running_workers_go_on"]),
    Breakage("second-coordinator-not-locked-out", C,
             "        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
             "        pass\n",
             ["tests/test_processes.py::test_second_coordinator_exits_at_once_naming_the_holder"]),
    Breakage("edited-issue-text-runs", C,
             "        if t.body_sha == sha:\n            return True\n",
             "        return True\n",
             ["tests/test_security.py::test_body_edited_after_labelling_runs_only_after_a_trusted_relabel"]),
    Breakage("bot-authored-issue-runs", C,
             "            if is_bot(issue.get(\"user\")):",
             "            if False:",
             ["tests/test_security.py::test_only_labels_from_writers_or_trusted_users_queue_an_issue"]),
    # (Removing only the redact() in notify() is no breakage: the reason it
    # quotes was redacted when it was read. Both layers must go for a leak.)
    Breakage("blocked-reason-not-redacted", C,
             'blocked_reason = redact(first[0].lstrip("# ").strip()[:300]) if first else ""',
             'blocked_reason = first[0].lstrip("# ").strip()[:300] if first else ""',
             ["tests/test_security.py::test_tokens_printed_by_a_worker_never_reach_log_comment_metrics_or_viewer"]),
    Breakage("hidden-text-reaches-prompt", P,
             "    text = _INVISIBLE.sub(\"\", text)\n",
             "",
             ["tests/test_security.py::test_clean_issue_text_drops_what_github_would_not_show",
              "tests/test_security.py::test_hostile_title_and_body_reach_the_worker_only_as_inert_quoted_data"]),
    Breakage("unsuccessful-run-not-a-draft", C,
             "                       draft=not ended_well)",
             "                       draft=False)",
             ["tests/test_e2e.py::test_commits_without_success_open_a_draft_pr"]),
    Breakage("max-attempts-ignored", C,
             "    if task.attempts >= cfg.max_attempts:",
             "    if task.attempts >= cfg.max_attempts + 1:",
             ["tests/test_e2e.py::test_failed_worker_is_retried_then_fails_with_reason"]),
    Breakage("cancel-by-moving-to-failed-ignored", C,
             "                reason = CANCELLED\n",
             "                reason = \"\"\n",
             ["tests/test_chaos.py::test_hand_edits_to_tasks_md_survive_and_are_obeyed"]),
    Breakage("timeout-not-enforced", C,
             "    if now - w.started_at > cfg.timeout:",
             "    if False:",
             ["tests/test_processes.py::test_timeout_stops_a_worker_that_ignores_sigterm_and_its_escaped_children"]),
    Breakage("worktree-kept-after-success", C,
             '        if ended.state == COMPLETED:\n            self.git.remove_worktree(w.tree)\n',
             '',
             ["tests/test_e2e.py::test_labelled_issue_becomes_pr_comment_and_completed_entry"]),
    # -- issue #12: a newcomer's path ------------------------------------------------------
    Breakage("check-ignores-the-clones-origin", "adws/doctor.py",
             '    if slug and slug.lower() != cfg.repo.lower():',
             '    if False:',
             ["tests/test_e2e.py::test_check_says_when_the_clone_is_of_another_repository"]),
    Breakage("check-creates-the-trees-dir", "adws/doctor.py",
             "    disk = free_mb(cfg.trees)  # of the nearest folder that exists: --check creates nothing\n",
             "    cfg.trees.mkdir(parents=True, exist_ok=True)\n    disk = free_mb(cfg.trees)\n",
             ["tests/test_e2e.py::test_check_creates_nothing"]),
    Breakage("refused-login-said-as-an-outage", C,
             "        if self.github_down_since is not None and self.github_auth_failed:",
             "        if False:",
             ["tests/test_e2e.py::test_a_refused_login_is_said_as_such_not_as_an_outage"]),
    Breakage("refused-login-not-in-health", "adws/metrics.py",
             '    elif state == "not_authenticated":',
             '    elif False:',
             ["tests/test_e2e.py::test_a_refused_login_is_said_as_such_not_as_an_outage"]),
    Breakage("status-line-says-running-after-stop", C,
             "                self.c.publish_stopped(self.c.clock())\n",
             "",
             ["tests/test_processes.py::test_sigterm_leaves_workers_running_and_a_restart_readopts_them"]),

    # -- issue #11: a month unattended ---------------------------------------------------------
    Breakage("vanished-entry-cancels-its-worker", C,
             "                self.restore_entry(w, now)\n                continue\n",
             "                reason = CANCELLED\n                self.begin_stop(w, reason, now)\n                continue\n",
             ["tests/test_chaos.py::test_a_running_workers_entry_that_vanishes_is_written_back_not_cancelled"]),
    Breakage("live-worker-requeued-by-the-poll", C,
             '        return (task is not None and task.state in (PENDING, ACTIVE)) or n in self.workers or n in self.starting',
             '        return task is not None and task.state in (PENDING, ACTIVE)',
             ["tests/test_supervision.py::test_the_poll_never_queues_an_issue_whose_worker_runs"]),
    Breakage("branch-with-commits-reset", GO,
             "    while commits_ahead(cfg, branch_for(cfg, issue, run)) > 0:\n        run += 1\n",
             "",
             ["tests/test_lifecycle.py::test_a_run_after_tasks_md_was_lost_never_resets_a_branch_with_commits"]),
    Breakage("durations-on-the-wall-clock", C,
             "        self.clock = clock or since_boot\n        self._wall = wall or (clock if clock is not None else time.time)\n",
             "        self.clock = wall or clock or time.time\n        self._wall = wall or (clock if clock is not None else time.time)\n",
             ["tests/test_supervision.py::test_a_wall_clock_stepped_forward_does_not_time_out_a_young_worker",
              "tests/test_supervision.py::test_a_wall_clock_stepped_back_does_not_stop_the_polling"]),
    Breakage("persisted-times-on-the-steady-clock", C,
             "        stamp = None if now is None else self.wall(now)\n",
             "        stamp = now\n",
             ["tests/test_supervision.py::test_times_written_to_tasks_md_follow_the_wall_clock_as_it_reads_now"]),
    Breakage("readopted-age-from-tasks-md", C,
             '        age = process_age(pid) if alive else None\n',
             '        age = None\n',
             ["tests/test_supervision.py::test_a_readopted_workers_age_comes_from_its_process_not_from_tasks_md"]),
    Breakage("breaker-lets-every-due-task-start", GA,
             "        if self.state == HALF_OPEN or now < self.next_probe_at:\n            return False\n",
             "        if now < self.next_probe_at:\n            return False\n",
             ["tests/test_supervision.py::test_breaker_opens_after_threshold_startup_errors_then_lets_one_probe_through"]),
    Breakage("probe-interval-never-escalates", GA,
             "            self.step += 1\n",
             "",
             ["tests/test_supervision.py::test_failed_probes_space_out_along_the_schedule_then_stay_at_its_last_step"]),
    Breakage("open-breaker-charges-the-task", C,
             "            elif outcome.systemic:  # the task waits for the breaker; nothing counts against it\n",
             "            elif False:\n",
             ["tests/test_chaos.py::test_an_outage_fails_no_task_and_costs_only_the_probes"]),
    Breakage("one-bad-task-hogs-the-probes", GA,
             "        fresh = [n for n in due if n not in self.probed]\n",
             "        fresh = due\n",
             ["tests/test_supervision.py::test_probes_go_round_the_queue_so_one_bad_task_cannot_hold_it"]),
    Breakage("failed-runs-never-pause", C,
             "        if outcome.kind == \"failed\":\n            self.gates.failed_run(w.issue, outcome.reason)\n",
             "        if False:\n            pass\n",
             ["tests/test_chaos.py::test_three_failed_runs_in_a_row_pause_spawning_until_sigusr1"]),
    Breakage("failure-breaker-never-reset", C,
             "        elif ended.state in (COMPLETED, BLOCKED):\n            self.gates.failures.good_run()\n",
             "",
             ["tests/test_chaos.py::test_three_failed_runs_in_a_row_pause_spawning_until_sigusr1"]),
    Breakage("transcript-never-capped", C,
             "    if cfg.max_log_mb > 0 and w.follower.offset - w.log_start > cfg.max_log_mb * 1024 * 1024:",
             "    if False:",
             ["tests/test_unattended.py::test_a_worker_whose_transcript_outgrows_max_log_mb_is_stopped"]),
    Breakage("free-disk-not-checked", GA,
             "            if free is not None and free < self.cfg.min_free_disk_mb:",
             "            if False:",
             ["tests/test_unattended.py::test_too_little_free_disk_holds_spawning_and_says_why"]),
    Breakage("kept-worktrees-never-pruned", "adws/retention.py",
             "            if age is None or age < cfg.keep_trees_days:",
             "            if True:",
             ["tests/test_unattended.py::test_kept_worktrees_and_logs_go_after_their_days_and_nothing_live_or_queued"]),
    Breakage("queued-tasks-trees-pruned", "adws/retention.py",
             "    return set(live) | {t.issue for t in doc.tasks if t.state in (tasks.PENDING, tasks.ACTIVE)}",
             "    return set(live)",
             ["tests/test_unattended.py::test_kept_worktrees_and_logs_go_after_their_days_and_nothing_live_or_queued"]),
    Breakage("ledger-pruned-with-the-logs", "adws/retention.py",
             '_LOG = re.compile(r"gh-([0-9]+)\\.(?:jsonl|stderr\\.log|prompt\\.md)")',
             '_LOG = re.compile(r"(?:gh-([0-9]+)\\.(?:jsonl|stderr\\.log|prompt\\.md)|usage\\.jsonl)")',
             ["tests/test_unattended.py::test_kept_worktrees_and_logs_go_after_their_days_and_nothing_live_or_queued"]),
    Breakage("a-failed-notice-finishes-the-run-again", C,
             '        del self.workers[w.issue]\n        if self.cluster is not None:\n',
             '        self.announce(w, ended) if ended is not None else None\n        del self.workers[w.issue]\n        if self.cluster is not None:\n',
             ["tests/test_core.py::test_a_notice_that_fails_after_the_outcome_is_recorded_never_finishes_the_run_again"]),
    Breakage("lock-covers-only-tasks-md", C,
             "    if git_dir.is_dir():\n        places.append(",
             "    if False:\n        places.append(",
             ["tests/test_unattended.py::test_a_second_coordinator_on_the_same_clone_is_refused_whatever_its_tasks_md"]),
    Breakage("every-problem-of-a-huge-file-logged", T,
             "        if len(self.problems) >= MAX_PROBLEMS:",
             "        if False:",
             ["tests/test_unattended.py::test_a_huge_damaged_tasks_md_is_reported_once_in_a_few_lines_and_work_goes_on"]),
    Breakage("archive-bypasses-the-lifecycle", C,
             "                tasks.transition(d, t.issue, tasks.NEW, expect=COMPLETED, entry=t)",
             "                d.remove(t)",
             ["tests/test_core.py::test_the_daemon_changes_task_state_only_through_transition"]),
    Breakage("no-subreaper", C,
             "    coordinator.subreaper = become_subreaper()\n",
             "    coordinator.subreaper = False\n",
             ["tests/test_processes.py::test_a_child_that_sheds_the_workers_environment_group_and_session_does_not_outlive_it"]),
    Breakage("orphans-never-reaped", C,
             "            reap_orphans({w.pid for w in self.workers.values()})\n",
             "            pass\n",
             ["tests/test_processes.py::test_a_child_that_sheds_the_workers_environment_group_and_session_does_not_outlive_it"]),
    Breakage("times-without-their-offset", T,
             '    return time.strftime(TIME_FORMAT + " %z", time.localtime(epoch))',
             '    return time.strftime(TIME_FORMAT, time.localtime(epoch))',
             ["tests/test_tasks.py::test_times_read_back_exactly_across_the_daylight_saving_change"]),
    # -- the dashboard, issue #17 -------------------------------------------------------------
    Breakage("dashboard-escaping-removed", CH,
             '    return html.escape("" if value is None else str(value), quote=True)',
             '    return "" if value is None else str(value)',
             ["tests/test_dashboard.py::test_hostile_titles_and_transcript_text_are_escaped"]),
    Breakage("dashboard-transcript-not-escaped", DB,
             "                    text = esc(segment.text)",
             "                    text = segment.text",
             ["tests/test_dashboard.py::test_hostile_titles_and_transcript_text_are_escaped"]),
    Breakage("dashboard-path-check-removed", DB,
             "    if os.path.commonpath([folder, real]) != folder:",
             "    if False:",
             ["tests/test_dashboard.py::test_paths_outside_the_state_folder_are_refused"]),
    Breakage("dashboard-answers-any-host-name", DB,
             "        if not self.loopback_only:\n            return True",
             "        if True:\n            return True",
             ["tests/test_dashboard.py::test_a_request_for_another_host_name_is_refused"]),
    Breakage("dashboard-transcript-not-streamed", DB,
             "            if len(out) >= CHUNK_LINES:",
             "            if False:",
             ["tests/test_dashboard.py::test_a_big_transcript_streams_in_constant_memory"]),
    Breakage("ledger-outcome-not-recorded", C,
             "record = transcript.ledger_record(w.issue, w.attempt, s, exit_reason, self.wall(now), outcome,\n",
             "record = transcript.ledger_record(w.issue, w.attempt, s, exit_reason, self.wall(now), '',\n",
             ["tests/test_e2e.py::test_labelled_issue_becomes_pr_comment_and_completed_entry"]),
    # -- issue #16: claims on the git server (adws/claims.py) --------------------------------------
    Breakage("claim-take-without-lease", "adws/claims.py",
             "        status, now_at, why = self._swap(self.ref(issue), sha, expect=ABSENT)",
             "        self.git([\"push\", \"--force\", self.remote, f\"{sha}:{self.ref(issue)}\"], self.clone)\n"
             "        status, now_at, why = OK, sha, \"\"",
             ["tests/test_claims.py::test_of_nodes_racing_to_take_an_issue_exactly_one_wins_every_round",
              "tests/test_claims.py::test_end_records_the_outcome_then_deletes_the_ref"]),
    Breakage("claim-renew-without-lease", "adws/claims.py",
             "        new = replace(claim, expires=max(claim.expires, expiry(now, self.lease_ttl)))\n"
             "        sha = self._commit(new, parent=claim.sha)\n"
             "        status, now_at, why = self._swap(self.ref(claim.issue), sha, expect=claim.sha)",
             "        new = replace(claim, expires=max(claim.expires, expiry(now, self.lease_ttl)))\n"
             "        sha = self._commit(new, parent=claim.sha)\n"
             "        status, now_at, why = self._swap(self.ref(claim.issue), sha, "
             "expect=self._remote_sha(self.ref(claim.issue)))",
             ["tests/test_claims.py::test_a_renewal_after_another_node_took_over_is_lost",
              "tests/test_claims.py::test_a_node_cut_off_from_the_remote_hears_unreachable_not_lost"]),
    Breakage("claim-renews-another-nodes-claim", "adws/claims.py",
             "        if claim.node != self.node:\n"
             "            # A lease on another node's sha would succeed: renewing it would steal it.",
             "        if False:",
             ["tests/test_claims.py::test_a_renewal_after_another_node_took_over_is_lost"]),
    Breakage("claim-renew-never-moves-expires", "adws/claims.py",
             "        new = replace(claim, expires=max(claim.expires, expiry(now, self.lease_ttl)))",
             "        new = replace(claim)",
             ["tests/test_claims.py::test_renew_moves_expires_forward_on_the_remote"]),
    Breakage("claim-take-over-of-a-live-claim", "adws/claims.py",
             "        if not expired.expired(now):\n            holder =",
             "        if not expired.readable:\n            holder =",
             ["tests/test_claims.py::test_a_live_claim_is_never_taken_over",
              "tests/test_claims.py::test_a_dead_node_restarted_does_not_delete_the_new_owners_claim"]),
    Breakage("claim-sweep-deletes-live-claims", "adws/claims.py",
             "            if not c.expired(now):\n                continue",
             "            if not c.readable:\n                continue",
             ["tests/test_claims.py::test_sweep_deletes_expired_claims_only",
              "tests/test_claims.py::test_a_dead_node_restarted_does_not_delete_the_new_owners_claim"]),
    Breakage("claim-push-judged-by-its-wording", "adws/claims.py",
             "        # Did not plainly land: the ref itself says what happened (see the module's docstring).\n",
             "        if True:\n            return (LOST if \"stale info\" in out else UNREACHABLE), \"\", why\n",
             ["tests/test_claims.py::test_the_server_checks_the_leased_old_value_under_the_ref_lock",
              "tests/test_claims.py::test_of_nodes_racing_to_take_an_issue_exactly_one_wins_every_round"]),
    Breakage("claim-partition-taken-for-lost", "adws/claims.py",
             "            return UNREACHABLE, \"\", why or _why(e)",
             "            return LOST, \"\", why or _why(e)",
             ["tests/test_claims.py::test_a_node_cut_off_from_the_remote_hears_unreachable_not_lost"]),
    Breakage("claim-answer-lost-taken-for-lost", "adws/claims.py",
             "        if (current.node, current.run, current.worker) == (self.node, claim.run, claim.worker):",
             "        if False:",
             ["tests/test_claims.py::test_a_renewal_whose_answer_was_lost_is_still_this_nodes_claim"]),
    Breakage("claim-worker-stopped-only-at-expiry", "adws/claims.py",
             "    return now >= claim.expires - lease_ttl / 3",
             "    return now >= claim.expires",
             ["tests/test_claims.py::test_renew_due_and_must_stop_split_the_lease_in_thirds",
              "tests/test_claims.py::test_a_node_cut_off_from_the_remote_hears_unreachable_not_lost"]),
    Breakage("claims-read-fetches-every-claim", "adws/claims.py",
             "        missing = sorted(set(shas.values()) - set(texts))",
             "        missing = sorted(set(shas.values()))",
             ["tests/test_claims.py::test_read_all_is_one_ls_remote_and_fetches_only_commits_it_lacks"]),
    Breakage("cluster-on-without-its-section", "adws/config.py",
             'cluster_enabled="cluster" in data',
             "cluster_enabled=True",
             ["tests/test_claims.py::test_without_a_cluster_section_the_node_claims_nothing"]),
    Breakage("claim-takeover-counts-attempts-from-zero", "adws/cluster.py",
             "r = self.claims.take_over(seen, run, worker, wall, max(attempt, seen.attempt + 1))",
             "r = self.claims.take_over(seen, run, worker, wall, attempt)",
             ["tests/test_claims.py::test_a_takeover_continues_the_attempt_count_the_claim_carries",
              "tests/test_cluster.py::test_a_dead_nodes_claims_are_taken_over_once_they_expire_and_its_attempts_count"]),
    Breakage("claim-retry-written-without-its-claim", C,
             "                fields.update(self.own_claim(w.issue, w.worker_id))  # the retry waits holding its claim",
             "                pass",
             ["tests/test_cluster.py::test_a_retry_is_written_naming_its_claim_so_a_restart_right_after_still_holds_it"]),
    Breakage("claim-retry-spawned-forgetting-its-claim", C,
             "next_attempt=\"\", claimed_by=self.held_text(n),",
             "next_attempt=\"\", claimed_by=\"\",",
             ["tests/test_cluster.py::test_a_retry_killed_while_its_claim_is_handed_over_is_still_known_as_its_own_after_the_restart"]),
    Breakage("claim-without-entry-called-a-twin", "adws/cluster.py",
             "            if t is None and (c.outcome or (listed is not None and n not in listed)):",
             "            if False:",
             ["tests/test_cluster.py::test_an_ended_claim_whose_entry_is_gone_is_no_twin"]),
    Breakage("claims-swept-before-the-listing-is-known", C,
             "self.cluster.read(set(self.issues) if self.listing_ok else None, self.wall(now),",
             "self.cluster.read(set(self.issues), self.wall(now),",
             ["tests/test_cluster.py::test_no_claim_is_swept_before_the_listing_is_known"]),
    Breakage("job-wake-up-drained-with-the-ticks", C,
             "        if self.jobs.finished():\n            return 0.05",
             "        if False:\n            return 0.05",
             ["tests/test_processes.py::test_a_job_that_ends_before_the_loop_drains_the_pipe_is_applied_at_once"]),
    # -- issue #18: the status issue ----------------------------------------------------------
    Breakage("status-body-edited-at-every-poll", "adws/status_issue.py",
             "        if desired == current or (desired, current) == self._echo:\n            return",
             "        if False:\n            return",
             ["tests/test_status_issue.py::test_the_body_is_edited_only_when_its_content_changes"]),
    Breakage("status-order-repeated-after-restart", "adws/status_issue.py",
             "            if token not in self.handled and token not in self._inflight:",
             "            if token not in self._inflight:",
             ["tests/test_status_issue.py::test_retry_is_one_order_also_when_the_box_stays_ticked_across_a_restart"]),
    Breakage("status-order-that-no-longer-applies-carried-out", "adws/status_issue.py",
             "            why_not = applies(kind, n, snap)",
             "            why_not = \"\"",
             ["tests/test_status_issue.py::test_retry_is_one_order_also_when_the_box_stays_ticked_across_a_restart"]),
    Breakage("status-rewrite-before-the-order-is-done", "adws/status_issue.py",
             "            if not (hold or self._inflight):",
             "            if not hold:",
             ["tests/test_status_issue.py::test_retry_is_one_order_also_when_the_box_stays_ticked_across_a_restart"]),
    Breakage("status-editor-without-write-obeyed", "adws/status_issue.py",
             '        return "" if perm in ("admin", "write") else f"edited by {login}, permission {perm}"',
             '        return ""',
             ["tests/test_status_issue.py::test_orders_from_someone_who_may_not_edit_are_refused"]),
    Breakage("status-only-the-last-editor-checked", "adws/status_issue.py",
             '        recent = [e for e in history["edits"] if e[0] >= since]',
             '        recent = history["edits"][-1:]',
             ["tests/test_status_issue.py::test_orders_from_someone_who_may_not_edit_are_refused"]),
    Breakage("status-editors-by-the-pis-clock", "adws/status_issue.py",
             "        since = self.written_at or _iso(",
             "        since = _iso(",
             ["tests/test_status_issue.py::test_who_ticked_is_judged_by_githubs_clock_not_the_pis"]),
    Breakage("status-ticks-overwritten-when-editors-unknown", "adws/status_issue.py",
             '            self._trouble("editors", e)\n            return [], True',
             '            self._trouble("editors", e)\n            return [], False',
             ["tests/test_status_issue.py::test_who_ticked_cannot_be_read_the_boxes_stay_and_wait"]),
    Breakage("status-second-issue-opened", "adws/status_issue.py",
             "            if mine:\n",
             "            if False:\n",
             ["tests/test_status_issue.py::test_created_once_and_found_again_after_a_restart_also_when_retitled"]),
    Breakage("status-issue-of-another-author-adopted", "adws/status_issue.py",
             '                    if str((i.get("user") or {}).get("login", "")).lower() == me.lower()\n'
             '                    and MARKER',
             "                    if MARKER",
             ["tests/test_status_issue.py::test_an_issue_someone_else_opened_with_the_label_and_marker_is_not_adopted"]),
    Breakage("status-issues-of-any-creator", G,
             '                f"&creator={_quote(creator)}&per_page=100")',
             '                "&per_page=100")',
             ["tests/test_github_client.py::test_issues_by_label_and_creator_in_any_state"]),
    Breakage("status-title-can-start-a-box", "adws/status_issue.py",
             '    text = " ".join(str(text).split())',
             "    text = str(text)",
             ["tests/test_status_issue.py::test_a_rendered_body_holds_no_order_and_each_ticked_box_is_exactly_its_order"]),
    Breakage("status-alert-at-every-poll", "adws/status_issue.py",
             '        return c["posted"] is None or now - c["posted"] >= self.every',
             "        return True",
             ["tests/test_status_issue.py::test_an_alert_is_posted_once_per_cause_within_notify_every_and_said_over",
              "tests/test_status_issue.py::test_a_restart_after_a_crash_is_said_once_per_notify_every"]),
    Breakage("status-owed-comments-not-kept-across-a-restart", "adws/status_issue.py",
             '"handled": self.handled, "owed": self.owed,',
             '"handled": self.handled, "owed": [],',
             ["tests/test_status_issue.py::test_github_down_then_edits_and_alerts_are_delivered_once_each"]),
    Breakage("status-failed-comment-forgotten", "adws/status_issue.py",
             '            except GitHubError as e:\n                self._trouble("comment", e)',
             '            except GitHubError as e:\n                self.owed.clear()\n                self._trouble("comment", e)',
             ["tests/test_status_issue.py::test_a_failed_edit_or_comment_is_tried_again_at_the_next_poll"]),
    Breakage("status-issue-read-without-its-etag", G,
             '        resp = self.api("GET", path, etag=etag)\n        if resp.status == 304 and cached is not None:\n'
             '            return cached',
             '        resp = self.api("GET", path, etag="")\n        if resp.status == 304 and cached is not None:\n'
             '            return cached',
             ["tests/test_status_issue.py::test_the_body_is_edited_only_when_its_content_changes",
              "tests/test_github_client.py::test_one_issue_read_with_its_etag_costs_a_304_until_it_changes"]),
    Breakage("status-issue-creation-retried", G,
             '        resp = self.api("POST", path, body={"title": title, "body": body, "labels": labels})',
             '        resp = self._write("POST", path, {"title": title, "body": body, "labels": labels})',
             ["tests/test_github_client.py::test_creating_an_issue_is_tried_once_and_editing_its_body_again"]),

    # -- the CLI's own budget, and what the polling costs -----------------------------------------
    Breakage("result-subtype-not-in-the-reason", C,
             "    if subtype and not stop_reason:",
             "    if False:",
             ["tests/test_lifecycle.py::test_a_run_the_cli_ends_at_its_budget_fails_with_the_clis_reason",
              "tests/test_real_cli_e2e.py::test_real_cli_ends_at_per_run_usd_itself_and_the_task_fails_saying_so"]),
    Breakage("max-budget-usd-in-cents", W,
             'f"{cfg.per_run_usd:g}"',
             'f"{cfg.per_run_usd * 100:g}"',
             ["tests/test_lifecycle.py::test_a_run_the_cli_ends_at_its_budget_fails_with_the_clis_reason",
              "tests/test_real_cli_e2e.py::test_real_cli_ends_at_per_run_usd_itself_and_the_task_fails_saying_so"]),
    Breakage("slow-polling-not-in-the-status-line", C,
             "        elif self.slow_poll:\n            parts.append(self.slow_poll)\n",
             "",
             ["tests/test_e2e.py::test_a_low_rate_limit_slows_the_polling_4x_and_the_status_line_says_so"]),
    # -- issue #13: throughput -------------------------------------------------------------
    Breakage("slow-work-on-the-loop", C,
             "        self.jobs = Jobs(threads, guard=self.guarded)\n",
             "        self.jobs = Jobs(0, guard=self.guarded)\n",
             ["tests/test_throughput.py::test_a_workers_exit_is_recorded_while_a_poll_hangs",
              "tests/test_throughput.py::test_a_workers_exit_is_recorded_while_a_start_fetches_slowly"]),
    Breakage("labellers-asked-one-issue-at-a-time", C,
             "        if fresh:\n            github.labellers(self.cfg.label, fresh)\n",
             "        if False:\n            github.labellers(self.cfg.label, fresh)\n",
             ["tests/test_throughput.py::test_an_intake_of_1000_issues_queues_each_once_from_the_events_feed"]),
    Breakage("pull-requests-looked-up-before-every-finish", C,
             'if commits == 0 and blocked_reason is None else ""',
             'if True else ""',
             ["tests/test_throughput.py::test_a_plain_task_costs_exactly_its_writes"]),
    # -- issue #15 phase 1: workflows below the loop -------------------------------------
    Breakage('workflow-naming-an-unknown-stage-accepted', 'adws/config.py',
             '            if stage not in stages:\n',
             '            if False:\n',
             ['tests/test_workflow.py::test_strict_config_errors_name_the_key',
              'tests/test_workflow.py::test_a_config_error_exits_78_naming_the_key']),
    Breakage('stage-template-not-checked', 'adws/config.py',
             '            if not template.is_file():\n                said',
             '            if False:\n                said',
             ['tests/test_workflow.py::test_strict_config_errors_name_the_key']),
    Breakage('stage-limits-not-passed-to-its-worker', 'adws/config.py',
             '        return replace(self, command=stage.argv_command, template_path=stage.template_path,\n                       max_turns=stage.max_turns, per_run_usd=stage.per_run_usd, timeout=stage.timeout)',
             '        return replace(self)',
             ['tests/test_workflow.py::test_stage_tables_change_a_stage_and_define_workflows']),
    Breakage('review-rounds-unbounded', 'adws/workflow.py',
             'if verdict.kind == CHANGES and rnd < review_rounds and BUILD in names:',
             'if verdict.kind == CHANGES and BUILD in names:',
             ['tests/test_workflow.py::test_changes_beyond_review_rounds_open_the_pr_as_a_draft_saying_so']),
    Breakage('blocked-stage-does-not-stop-the-workflow', 'adws/workflow.py',
             '    if runs and runs[-1].outcome == "blocked":',
             '    if False:',
             ['tests/test_workflow.py::test_a_blocked_plan_stops_the_workflow_before_build']),
    Breakage('failed-stage-taken-as-done', 'adws/workflow.py',
             'if run.outcome != "completed" or pos >= total or run.name != names[pos]:',
             'if pos >= total or run.name != names[pos]:',
             ['tests/test_workflow.py::test_failed_runs_are_retried_alone_and_counted_per_stage',
              'tests/test_workflow.py::test_property_a_workflow_ends_within_its_bounds']),
    Breakage('unreadable-verdict-taken-for-changes', 'adws/workflow.py',
             '    return Verdict(UNCLEAR, f"first line of',
             '    return Verdict(CHANGES, f"first line of',
             ['tests/test_workflow.py::test_review_verdicts']),
    Breakage('unreadable-verdict-opens-a-ready-pr', 'adws/workflow.py',
             '            why.append(f"the review gave no readable verdict ({v.summary})")',
             '            pass',
             ['tests/test_workflow.py::test_an_unreadable_verdict_is_neither_changes_nor_approval']),
    Breakage('plan-without-its-file-accepted', 'adws/workflow.py',
             '        if text is not None and text.strip():',
             '        if True:',
             ['tests/test_workflow.py::test_stage_outcome']),
    Breakage('tac-excluded-in-the-worktrees-own-git-dir', 'adws/gitops.py',
             '    out = git(["rev-parse", "--git-path", "info/exclude"], tree, timeout=60).strip()',
             '    out = git(["rev-parse", "--git-dir"], tree, timeout=60).strip() + "/info/exclude"',
             ['tests/test_workflow.py::test_tac_is_kept_out_of_commits_even_by_git_add_all']),
    Breakage('review-diff-read-whole', 'adws/gitops.py',
             '            cut = len(data) > limit',
             '            cut = False',
             ['tests/test_workflow.py::test_the_diff_a_review_gets_is_bounded']),
    Breakage('stage-text-can-close-its-tags', 'adws/prompt.py',
             'r"<\\s*/?\\s*(?:issue|stage)-"',
             'r"<\\s*/?\\s*(?:issue)-"',
             ['tests/test_workflow.py::test_the_review_prompt_with_a_real_issue_its_plan_and_its_diff',
              'tests/test_workflow.py::test_the_build_stage_gets_the_plan_and_in_a_changes_round_the_review']),
    Breakage('review-diff-hides-invisible-characters', 'adws/prompt.py',
             'diff = _SHOWN.sub(lambda m: "\\\\u%04x" % ord(m.group()) if',
             'diff = _SHOWN.sub(lambda m: "" if',
             ['tests/test_workflow.py::test_the_review_prompt_with_a_real_issue_its_plan_and_its_diff']),
    Breakage('plan-not-given-to-the-build-template', 'adws/prompt.py',
             '        if texts[key].strip() and "{" + key + "}" not in template:',
             '        if False:',
             ['tests/test_workflow.py::test_the_build_stage_gets_the_plan_and_in_a_changes_round_the_review']),
    Breakage('stage-results-not-rendered', 'adws/tasks.py',
             '            lines += [f"- Stage {r.name}: {_escape(r.value)}" for r in t.stage_runs]',
             '            lines += []',
             ['tests/test_tasks.py::test_stage_lines_read_into_fields_and_render_back_exactly',
              'tests/test_tasks.py::test_property_round_trip']),
    Breakage('stage-cost-rounded-to-cents', 'adws/tasks.py',
             '        cost = f"{self.cost:.2f}" if round(self.cost, 2) == self.cost else f"{self.cost:.4f}"',
             '        cost = f"{self.cost:.2f}"',
             ['tests/test_tasks.py::test_stage_results_as_the_daemon_records_them_read_back_equal',
              'tests/test_tasks.py::test_property_round_trip']),
    Breakage('running-stage-kept-when-leaving-active', 'adws/tasks.py',
             '            cur.stage = None  # describes a running worker',
             '            pass  # describes a running worker',
             ['tests/test_tasks.py::test_a_stage_ending_is_an_amend_and_leaving_active_forgets_the_stage_only']),
    Breakage('ledger-line-without-its-stage', 'adws/transcript.py',
             '        record["stage"] = stage',
             '        pass',
             ['tests/test_workflow.py::test_the_ledger_line_of_a_stage_run_names_its_stage']),
    Breakage('usage-report-by-stage-ignores-the-stage', 'tools/usage_report.py',
             '(self.stages, run.stage or NO_STAGE)',
             '(self.stages, NO_STAGE)',
             ['tests/test_workflow.py::test_usage_report_by_stage']),
    Breakage('scripted-worker-ignores-tac-stage', 'adws/sandbox/scripted_worker.py',
             '    if stage and stage in opts.get("stages", {}):',
             '    if False:',
             ['tests/test_workflow.py::test_the_scripted_worker_runs_each_stage_as_scripted']),
    # -- issue #18 phase 2: the status issue wired into the daemon (adws/steering.py) ----------------
    Breakage("status-state-of-another-repository-used", "adws/status_issue.py",
             '            if str(data.get("repo", self.github.repo)) != self.github.repo:',
             "            if False:",
             ["tests/test_status_issue.py::test_a_state_file_of_another_repository_is_not_used"]),
    Breakage("status-issue-on-when-off", S,
             "        if not cfg.status_issue or self.c.dry_run:",
             "        if self.c.dry_run:",
             [E + "test_off_by_default_no_request_no_file"]),
    Breakage("status-issue-queued-as-a-task", C,
             "        listing = [i for i in listing if not is_status_issue(i)]",
             "        listing = list(listing)",
             [E + "test_opened_once_found_again_after_a_restart_and_never_a_task"]),
    Breakage("status-step-at-every-tick", S,
             "        if (status is None or c.last_poll_at is None or c.last_poll_at == self.after_poll",
             "        if (status is None or c.last_poll_at is None",
             [E + "test_the_body_is_edited_only_when_its_content_changes"]),
    Breakage("status-body-edited-at-every-poll-e2e", "adws/status_issue.py",
             "        if desired == current or (desired, current) == self._echo:\n            return",
             "        if False:\n            return",
             [E + "test_the_body_is_edited_only_when_its_content_changes"],
             note="the unit breakage status-body-edited-at-every-poll, caught by the daemon's test too"),
    Breakage("status-pause-in-memory-only", S,
             '            c.gates.pause(f"{who} ticked \\"Pause new work\\" on the status issue at {_clock(c.wall(c.clock()))}")',
             "            c.gates.paused_by_signal = True",
             [E + "test_pause_box_pauses_within_a_poll_holds_across_a_restart_and_unticking_resumes"]),
    Breakage("status-resume-ignored", S,
             '            c.gates.unpause(f"{who} unticked \\"Pause new work\\" on the status issue")',
             "            pass",
             [E + "test_pause_box_pauses_within_a_poll_holds_across_a_restart_and_unticking_resumes"]),
    Breakage("status-run-next-keeps-its-priority", S,
             'if c.amend(n, expect=PENDING, priority=0, next_attempt="") is None:',
             'if c.amend(n, expect=PENDING, next_attempt="") is None:',
             [E + "test_pause_box_pauses_within_a_poll_holds_across_a_restart_and_unticking_resumes"]),
    Breakage("status-cancel-of-a-queued-task-keeps-its-label", S,
             "                answer = self.job(status, order, (\"label\", n), functools.partial(c.github.remove_label, n, c.cfg.label),\n"
             "                                  lambda _: self.cancel(n, who))",
             "                answer = self.cancel(n, who)",
             [E + "test_pause_box_pauses_within_a_poll_holds_across_a_restart_and_unticking_resumes"]),
    Breakage("status-retry-without-the-label", S,
             "                c.github.add_labels(n, [c.cfg.label])",
             "                pass",
             [E + "test_retry_queues_exactly_one_new_run_also_across_a_restart_before_the_rewrite"]),
    Breakage("status-order-repeated-after-restart-e2e", "adws/status_issue.py",
             "            if token not in self.handled and token not in self._inflight:",
             "            if token not in self._inflight:",
             [E + "test_retry_queues_exactly_one_new_run_also_across_a_restart_before_the_rewrite"],
             note="the unit breakage status-order-repeated-after-restart, caught by the daemon's test too"),
    Breakage("status-cancel-leaves-the-worker-running", S,
             "            c.begin_stop(w, STOP_BY_USER, c.clock())",
             "            pass",
             [E + "test_cancel_stops_a_running_worker_and_its_children"]),
    Breakage("status-cancel-is-not-a-persons-stop", S,
             "            c.begin_stop(w, STOP_BY_USER, c.clock())",
             '            c.begin_stop(w, "cancelled on the status issue", c.clock())',
             [E + "test_cancel_stops_a_running_worker_and_its_children"]),
    Breakage("status-crash-not-told", S,
             '            self.status.notice(self.c.wall(now), "crash",',
             '            (lambda *a: None)(self.c.wall(now), "crash",',
             [E + "test_an_alert_is_posted_once_per_cause_and_mentions_the_logins"]),
    Breakage("status-clean-stop-told-as-a-crash", C,
             "                self.c.steering.mark_stopped()  # a clean stop: no crash to tell at the next start\n",
             "",
             [E + "test_an_alert_is_posted_once_per_cause_and_mentions_the_logins"]),
    Breakage("status-step-skipped-while-github-is-down", S,
             '                or c.jobs.busy(("poll",)) or c.jobs.busy(("status",)) or self.open):',
             '                or c.jobs.busy(("poll",)) or c.jobs.busy(("status",)) or self.open\n'
             "                or c.github_down_since is not None):",
             [E + "test_github_down_for_a_while_then_edits_and_alerts_are_delivered_once_each"]),
    Breakage("status-owed-comments-not-kept-across-a-restart-e2e", "adws/status_issue.py",
             '"handled": self.handled, "owed": self.owed,',
             '"handled": self.handled, "owed": [],',
             [E + "test_github_down_for_a_while_then_edits_and_alerts_are_delivered_once_each"],
             note="the unit breakage status-owed-comments-not-kept-across-a-restart, caught by the daemon's test too"),
    Breakage("status-snapshot-ticks", S,
             "health_reason=steady(reason),",
             "health_reason=reason,",
             [E + "test_the_loops_own_alert_causes_and_a_snapshot_that_does_not_tick"]),
    Breakage("status-breaker-alert-at-once", S,
             "now - self.breaker_since > c.cfg.startup_backoff[0]:",
             "now - self.breaker_since >= 0:",
             [E + "test_the_loops_own_alert_causes_and_a_snapshot_that_does_not_tick"]),
    Breakage("stop-waits-for-a-hung-job", C,
             "                left = self.c.jobs.in_flight()\n",
             "                left = 0\n",
             ["tests/test_throughput.py::test_a_workers_exit_is_recorded_while_a_poll_hangs"]),
    Breakage("status-table-hides-the-follow-up-round", "tools/status.py",
             '    if w.get("round"):  # a follow-up round',
             '    if False:  # a follow-up round',
             ["tests/test_status.py::test_the_table_says_a_workers_stage_or_follow_up_round"]),
    Breakage("dashboard-pause-not-said", DB,
             '    if facts["paused"]:\n        out.append(notice("Spawning is paused by the user"',
             '    if False:\n        out.append(notice("Spawning is paused by the user"',
             ["tests/test_dashboard.py::test_why_spawning_is_paused_is_said_at_the_top"]),
    Breakage("dashboard-spawn-block-not-said", DB,
             '    if facts["spawn_block"]:\n        block = facts["spawn_block"]',
             '    if False:\n        block = facts["spawn_block"]',
             ["tests/test_dashboard.py::test_why_spawning_is_paused_is_said_at_the_top"]),
    Breakage("cost-chart-without-the-budget-line", CH,
             "    if budget:\n        y = bottom - plot_h * budget / rtop",
             "    if False:\n        y = bottom - plot_h * budget / rtop",
             ["tests/test_dashboard.py::test_every_chart_has_its_points_and_they_add_up"]),
    Breakage("status-issue-hides-the-workflow-stage", S,
             'str(t.stage) if t.stage is not None else "",  # a workflow\'s stage',
             '"",  # a workflow\'s stage',
             [E + "test_a_workflow_shows_its_stage_and_a_retry_keeps_its_workflow"]),
    Breakage("status-retry-drops-the-workflow", S,
             "expect=(FAILED, BLOCKED), workflow=cur.workflow,",
             "expect=(FAILED, BLOCKED),",
             [E + "test_a_workflow_shows_its_stage_and_a_retry_keeps_its_workflow"]),
    Breakage("status-github-outage-never-alerted", S,
             "        if down is not None and now - down >= GITHUB_ALERT_AFTER:",
             "        if down is not None and now - down >= 24 * GITHUB_ALERT_AFTER:",
             [E + "test_the_loops_own_alert_causes_and_a_snapshot_that_does_not_tick"]),
    # -- issue #14: follow-ups on the coordinator's pull requests (phase 1) ---------------------------
    Breakage("followup-own-comment-asks", FU,
             '    if COMMENT_MARKER in item.body:\n        return None, "own"',
             '    if False:\n        return None, "own"',
             [FT + "test_the_coordinators_own_comment_never_triggers_but_its_accounts_words_do"]),
    Breakage("followup-untrusted-asks", FU,
             "    if not item.author or not trusted(item.author):",
             "    if not item.author:",
             [FT + "test_an_untrusted_tac_does_nothing_and_never_reaches_the_prompt"]),
    Breakage("followup-bots-ask", FU,
             '    if item.bot or item.author.endswith("[bot]"):',
             "    if False:",
             [FT + "test_bots_never_trigger_even_when_listed_as_trusted"]),
    Breakage("followup-phrase-in-a-quote-asks", FU,
             '        elif not stripped.startswith(">"):',
             "        else:",
             [FT + "test_the_phrase_counts_only_where_a_reader_sees_it_asked"]),
    Breakage("followup-no-quiet", FU,
             "    if now < due:\n        return Decision(WAIT",
             "    if False:\n        return Decision(WAIT",
             [FT + "test_a_burst_of_three_comments_inside_quiet_is_one_batch"]),
    Breakage("followup-max-rounds-ignored", FU,
             "    if watch.round - 1 >= max_rounds:",
             "    if False:",
             [FT + "test_max_rounds_reached_says_so_once_and_runs_nothing"]),
    Breakage("followup-merged-pr-still-watched", FU,
             '        if state != "open":\n            why = ',
             '        if False:\n            why = ',
             [FT + "test_a_merged_or_closed_pull_request_stops_all_follow_ups"]),
    Breakage("followup-hold-ignored", FU,
             "    if watch.held_sha and not any(t.at > watch.held_at for t in triggers):",
             "    if False:",
             [FT + "test_the_hold_waits_for_a_new_request_then_runs_on_the_reviewed_head"]),
    Breakage("followup-every-watched-pr-read-each-poll", FU,
             "        if self._read.get(w.pr, w.seen) != updated:",
             "        if True:",
             [FT + "test_idle_polls_cost_nothing_and_one_changed_pr_among_30_costs_only_its_reads"]),
    Breakage("followup-pull-list-without-etag", G,
             "        pulls = _items(\"GET\", path, self.get_conditional(path, pages=1), keys)",
             "        pulls = _items(\"GET\", path, _shape(0, \"GET\", path, self.api(\"GET\", path).data, list), keys)",
             [FT + "test_idle_polls_cost_nothing_and_one_changed_pr_among_30_costs_only_its_reads"]),
    Breakage("followup-edit-read-again", FU,
             "            if item.key in mine or item.key in edited:\n                continue",
             "            if False:\n                continue",
             [FT + "test_an_edit_after_the_read_is_not_used_even_across_a_restart"]),
    Breakage("followup-edit-taken-after-a-restart", FU,
             "            if item.key in w.pending and w.pending[item.key] != item.digest:",
             "            if False:",
             [FT + "test_an_edit_after_the_read_is_not_used_even_across_a_restart"]),
    Breakage("followup-edited-hash-forgotten", FU,
             "        pending.update({k: w.pending.get(k, v) for k, v in edited.items()})",
             "",
             [FT + "test_an_edit_after_the_read_is_not_used_even_across_a_restart"]),
    Breakage("followup-foreign-agent-config-missed", GO,
             "        if _blob(cfg, head, path) != _blob(cfg, base, path):",
             "        if False:",
             [FT + "test_a_persons_commit_changing_agent_configuration_is_held_with_the_file_named"]),
    Breakage("followup-base-config-taken-for-foreign", GO,
             "        if _blob(cfg, head, path) != _blob(cfg, base, path):",
             "        if True:",
             [FT + "test_a_merge_of_the_base_brings_no_foreign_configuration"]),
    Breakage("followup-foreign-check-fails-open", GO,
             '    log = git(["log", "--format=%H%x00%an%x00%s", head, *stops, "--"], cfg.repo_path, timeout=60)',
             '    try:\n        log = git(["log", "--format=%H%x00%an%x00%s", head, *stops, "--"], cfg.repo_path, timeout=60)\n'
             '    except GitError:\n        return Foreign([], [])',
             [FT + "test_when_git_cannot_tell_whose_commits_they_are_it_fails_closed"]),
    Breakage("followup-push-forced", GO,
             '        git(["push", "--porcelain", cfg.remote, f"refs/heads/{branch}:refs/heads/{target}"], cfg.repo_path)',
             '        git(["push", "--porcelain", "--force", cfg.remote, f"refs/heads/{branch}:refs/heads/{target}"],'
             ' cfg.repo_path)',
             [FT + "test_a_push_that_is_not_a_fast_forward_is_refused_never_forced"]),
    Breakage("followup-fake-own-review-allowed", "adws/sandbox/fakegithub.py",
             '        if author == rec["author"] and state != "COMMENTED":',
             "        if False:",
             [FT + "test_nobody_can_request_changes_on_their_own_pull_request"]),
    Breakage("followup-hidden-review-text-reaches-the-prompt", P,
             '    return _cap(_escape_tags(clean_issue_text(text, limit=10 * limit)), limit, "comment")',
             '    return _cap(_escape_tags(text), limit, "comment")',
             [FT + "test_review_text_reaches_the_prompt_as_data_it_cannot_break_out_of"]),
    Breakage("followup-review-text-closes-its-tag", P,
             '    return _DATA_TAG.sub(lambda m: m.group(0).replace("<", "&lt;"), text)',
             "    return text",
             [FT + "test_review_text_reaches_the_prompt_as_data_it_cannot_break_out_of"]),
    Breakage("followup-answer-pings-people", P,
             '    text = _MENTION.sub("@\\u200b", _HTML_COMMENT.sub("", text))',
             '    text = _HTML_COMMENT.sub("", text)',
             [FT + "test_the_answer_lists_the_commits_and_what_was_done_per_comment"]),
    Breakage("followup-round-not-a-tasks-field", T,
             '    ("Round", "round", "str"), ("Pushed", "pushed", "str"),',
             '    ("Pushed", "pushed", "str"),',
             [FT + "test_the_follow_up_fields_round_trip_and_make_a_watch"]),
    Breakage("followup-round-not-in-the-ledger", "adws/transcript.py",
             '    if round > 1:\n        record["round"] = round',
             '    if False:\n        record["round"] = round',
             [FT + "test_the_ledger_keeps_the_round_and_usage_report_shows_the_first_run_and_each_round"]),
    # -- issue #15 phase 2: the loop runs workflows (adws/flow.py, hooks in the daemon) --
    Breakage("flow-stage-result-not-recorded", C,
             "            if outcome.stage_run is not None:  # the stage's line",
             "            if False:  # the stage's line",
             [WE + "test_plan_build_review_runs_in_order_in_one_worktree_and_opens_one_pr"]),
    Breakage("flow-failed-stage-restarts-the-workflow", C,
             '                fields["stage_runs"] = cur.stage_runs + [outcome.stage_run]',
             '                fields["stage_runs"] = ([] if outcome.kind == "failed" else cur.stage_runs) + [outcome.stage_run]',
             [WE + "test_a_failing_build_stage_is_retried_alone"]),
    Breakage("flow-attempts-carried-into-the-next-stage", C,
             '                fields.update(attempts=0, startup_errors=0, next_attempt="", reason="")',
             '                fields.update(startup_errors=0, next_attempt="", reason="")',
             [WE + "test_a_failing_build_stage_is_retried_alone"]),
    Breakage("flow-stage-not-in-the-ledger", C,
             "                                          stage=self.flow.stage_name(w.issue), round=w.round)",
             "                                          stage='', round=w.round)",
             [WE + "test_plan_build_review_runs_in_order_in_one_worktree_and_opens_one_pr"]),
    Breakage("flow-pr-body-without-plan-and-verdict", C,
             "        if outcome.note:\n",
             "        if False:\n",
             [WE + "test_plan_build_review_runs_in_order_in_one_worktree_and_opens_one_pr"]),
    Breakage("flow-readoption-forgets-the-stage", C,
             "        self.flow.adopted(t)  # a workflow stage's worker",
             "        pass  # a workflow stage's worker",
             [WE + "test_kill_9_during_each_stage_runs_every_stage_exactly_once"]),
    Breakage("flow-untrusted-workflow-label-accepted", FL,
             '        return kind != "Bot" and github.permission(login) in ("admin", "write", "maintain")',
             '        return True',
             [WE + "test_the_workflow_label_counts_only_from_a_trusted_labeller"]),
    Breakage("flow-resume-ignored", FL,
             '        return ["--resume", start.session] if start is not None and start.session else []',
             '        return []',
             [WE + "test_resume_true_continues_the_previous_stage_session",
              "tests/test_real_cli_e2e.py::test_real_cli_two_stage_workflow_resumes_the_plan_session_in_build"]),
    Breakage("flow-stage-limits-ignored", FL,
             "        if start is None:\n            return cfg\n",
             "        if True:\n            return cfg\n",
             [WE + "test_resume_true_continues_the_previous_stage_session"]),
    Breakage("flow-later-stage-gets-a-fresh-worktree", FL,
             "            if start.continuing and start.branch:\n",
             "            if False:\n",
             [WE + "test_plan_build_review_runs_in_order_in_one_worktree_and_opens_one_pr"]),
    Breakage("flow-blocked-plan-goes-on-to-build", FL,
             "        if end.kind != DONE:\n",
             "        if end.kind not in (DONE, 'blocked'):\n",
             [WE + "test_a_blocked_plan_ends_blocked_and_no_build_runs"]),
    Breakage("flow-changes-round-without-the-review", FL,
             "review=(read_stage_file(w.tree, REVIEW) or \"\") if name == BUILD and start.review_round else \"\",",
             "review=\"\",",
             [WE + "test_a_changes_verdict_runs_one_more_build_round_and_no_more"]),
    # -- issue #14: follow-up rounds run by the daemon (phase 2) --------------------------------------
    Breakage("round-end-tells-the-issue-again", T,
             "        if to in TERMINAL and not (state == ACTIVE and to == COMPLETED and in_round(cur)):",
             "        if to in TERMINAL:",
             ["tests/test_core.py::test_a_round_goes_completed_active_completed_and_leaves_finished_and_the_notice_alone",
              RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes"]),
    Breakage("round-never-launched-goes-to-pending", C,
             "            if tasks.in_round(t):\n                self.followups.never_launched(t)",
             "            if False:\n                self.followups.never_launched(t)",
             [RE + "test_a_restart_before_the_round_started_runs_it_once"]),
    Breakage("round-adopted-as-a-first-run", C,
             "        if tasks.in_round(t):\n            self.followups.adopted(w, t)",
             "        if False:\n            self.followups.adopted(w, t)",
             [RE + "test_kill_9_during_a_round_then_restart_finishes_it_once"]),
    Breakage("round-never-resumes", R,
             '            w.argv_extra = ["--resume", ready.session] if ready.session else []',
             "            w.argv_extra = []",
             [RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes",
              RC + "test_real_cli_followup_round_resumes_the_first_runs_session_and_runs_fresh_once_the_store_lost_it"]),
    Breakage("round-resumes-a-session-the-store-lost", R,
             "        resumed = bool(session) and session_stored(c.environ, w.tree, session)",
             "        resumed = bool(session)",
             [RE + "test_a_push_during_the_round_is_kept_then_max_rounds_and_a_merged_pr_stops_it",
              RC + "test_real_cli_followup_round_resumes_the_first_runs_session_and_runs_fresh_once_the_store_lost_it"]),
    # Where the real CLI keeps a worktree's sessions (every character but
    # letters and digits made "-", not only "/"): the scripted worker copies
    # the coordinator's belief, only the real CLI can refute it.
    Breakage("round-looks-for-sessions-where-the-cli-keeps-none", R,
             '    names = {re.sub(r"[^A-Za-z0-9]", "-", str(tree)), str(tree).replace("/", "-")}',
             '    names = {str(tree).replace("/", "-")}',
             [RC + "test_real_cli_followup_round_resumes_the_first_runs_session_and_runs_fresh_once_the_store_lost_it"]),
    Breakage("round-items-never-handled", R,
             "        fields = followup.round_ended(watch, ended.batch, ended.pushed)",
             "        fields = followup.round_ended(watch, Batch(0, []), ended.pushed)",
             [RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes"]),
    Breakage("round-answer-posted-not-edited", R,
             "        if answer_id:\n            c.github.edit_comment(answer_id, text)",
             "        if False:\n            c.github.edit_comment(answer_id, text)",
             [RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes"]),
    Breakage("round-answer-not-found-after-a-crash", R,
             "        answer_id = t.answer_id or r.answer_id or self.find_answer(pr_number, w.round, rounds)",
             "        answer_id = t.answer_id or r.answer_id",
             [RE + "test_kill_9_during_a_round_then_restart_finishes_it_once"]),
    Breakage("round-anyone-is-trusted", R,
             '        return login in self.c.cfg.trusted_users or self.c.github.permission(login) in ("admin", "write", "maintain")',
             "        return True",
             [RE + "test_an_untrusted_request_runs_nothing_and_an_idle_watch_costs_no_request"]),
    Breakage("round-max-rounds-said-every-poll", R,
             "            fields = dict(d.fields, **followup.answered(d.watch, d.batch))",
             "            fields = dict(d.fields)",
             [RE + "test_a_push_during_the_round_is_kept_then_max_rounds_and_a_merged_pr_stops_it"]),
    Breakage("round-merged-pr-watched-on", R,
             "            if c.amend(n, expect=COMPLETED, **d.fields) is not None:\n                log.info(\"gh-%d follow-ups %s",
             "            if c.amend(n, expect=COMPLETED) is not None:\n                log.info(\"gh-%d follow-ups %s",
             [RE + "test_a_push_during_the_round_is_kept_then_max_rounds_and_a_merged_pr_stops_it"]),
    Breakage("round-no-round-env", R,
             '            w.env_extra = {"TAC_ROUND": str(w.round)}',
             "            w.env_extra = {}",
             [RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes"]),
    Breakage("round-finish-as-a-first-run", C,
             "                work, done = ((self.followups.finish_work, self.followups.finish_done) if w.round",
             "                work, done = ((self.followups.finish_work, self.followups.finish_done) if False",
             [RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes"]),
    Breakage("round-ignores-foreign-agent-config", R,
             "        if foreign.paths:\n            c.github.comment(r.watch.pr, followup.hold_text(",
             "        if False:\n            c.github.comment(r.watch.pr, followup.hold_text(",
             [RE + "test_a_persons_agent_config_commit_holds_the_round_until_a_trusted_person_asks_again"]),
    Breakage("round-ignores-max-concurrent", R,
             "        if c.max_concurrent - len(c.workers) - len(c.starting) <= 0:",
             "        if False:",
             [RE + "test_a_round_waits_for_a_free_slot_and_the_queue_goes_first"]),
    Breakage("round-ignores-the-budget", R,
             "        block = c.spawn_block(now) or c.gates.memory_block()",
             "        block = c.gates.memory_block()",
             [RE + "test_a_round_waits_while_the_daily_budget_is_spent"]),
    Breakage("round-not-shown-by-the-viewer", "tools/view_worker.py",
             '            if event.get("round"):  # a follow-up round',
             '            if False:  # a follow-up round',
             ["tests/test_view_worker.py::test_a_follow_up_round_says_so_and_whether_its_session_was_resumed"]),
    Breakage("round-push-forced", R,
             "                result = gitops.push_fast_forward(cfg, w.branch)",
             "                gitops.push_branch(cfg, w.branch)\n"
             "                result = gitops.PushResult(True, gitops.head_sha(cfg, w.branch))",
             [RE + "test_a_push_during_the_round_is_kept_then_max_rounds_and_a_merged_pr_stops_it"]),
    Breakage("round-ledger-without-round", C,
             "stage=self.flow.stage_name(w.issue), round=w.round)",
             "stage=self.flow.stage_name(w.issue), round=0)",
             [RE + "test_a_review_and_a_burst_of_comments_are_answered_by_one_round_that_resumes_and_pushes"]),
]

# Must be caught: proves the copy's code is what the tests run.
CANARY = Breakage("canary-render-loses-entries", T,
                  "    for section in (\"\",) + SECTIONS:\n",
                  "    doc = TaskFile(status=doc.status, title=doc.title)\n    for section in (\"\",) + SECTIONS:\n",
                  ["tests/test_tasks.py::test_canonical_rendering"])


# -- running -------------------------------------------------------------------------------------

def repo_files() -> List[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def make_copy(files: Sequence[str]) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="tac-mutant-"))
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    cache = ROOT / ".cache"
    if cache.exists():  # the pinned Claude CLI for the real-CLI tier: shared, read-only
        (dest / ".cache").symlink_to(cache)
    return dest


def apply(copy: Path, b: Breakage) -> Optional[str]:
    """Apply the edit; return why it cannot be applied, or None."""
    path = copy / b.file
    text = path.read_text(encoding="utf-8")
    count = text.count(b.old) if b.old else 0
    if count != 1:
        return f"snippet found {count} times in {b.file}"
    path.write_text(text.replace(b.old, b.new), encoding="utf-8")
    return None


def env_for(copy: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_tests(copy: Path, tests: Sequence[str], timeout: float) -> Tuple[str, float, str]:
    """("passed" | "failed" | "timeout" | "error", seconds, tail of output)."""
    t0 = time.time()
    cmd = [str(PYTHON), "-m", "pytest", "-q", "-x", "--tb=line", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    try:
        p = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return "timeout", time.time() - t0, out[-1500:]
    took = time.time() - t0
    tail = (p.stdout + p.stderr)[-1500:]
    # pytest: 0 all passed, 1 some failed; anything else (2 interrupted,
    # 4 usage, 5 nothing collected: a claim naming a test that is gone) is
    # an error in the check itself, never a catch.
    return {0: "passed", 1: "failed"}.get(p.returncode, "error"), took, tail


def check_imports(copy: Path) -> None:
    code = ("import adws.coordinator, adws.tasks, adws.github, harness; "
            "print(adws.coordinator.__file__); print(adws.tasks.__file__); print(harness.COORDINATOR)")
    env = env_for(copy)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(copy / "tests"), env["PYTHONPATH"]])
    out = subprocess.run([str(PYTHON), "-c", code], cwd=copy, env=env, capture_output=True, text=True)
    paths = out.stdout.split()
    if out.returncode != 0 or len(paths) != 3 or not all(Path(p).resolve().is_relative_to(copy.resolve()) for p in paths):
        sys.exit(f"mutations: the copy's modules are not the ones imported:\n{out.stdout}{out.stderr}")


def judge(b: Breakage, files: Sequence[str], timeout: float, keep: bool) -> Tuple[str, str]:
    """(verdict, detail): caught | survived | stale | unclaimed | error."""
    if not b.tests:
        return "unclaimed", b.note or "no test claims it"
    copy = make_copy(files)
    try:
        why = apply(copy, b)
        if why:
            return "stale", why
        outcome, took, tail = run_tests(copy, b.tests, timeout)
        tail = tail.replace(str(copy) + os.sep, "")
        if outcome == "failed":
            # --tb=line: one "path:line: Error" line per failure says which assertion noticed.
            where = [ln for ln in tail.splitlines() if ln.startswith(("/", "tests/")) and ": " in ln]
            return "caught", f"{took:.0f} s: {where[0][:200] if where else 'failed'}"
        if outcome == "timeout":
            return "caught", f"timed out after {took:.0f} s (a hang is noticed, slowly)"
        if outcome == "passed":
            return "survived", f"{took:.0f} s"
        return "error", tail
    finally:
        if keep:
            print(f"   kept {copy}", file=sys.stderr)
        else:
            shutil.rmtree(copy, ignore_errors=True)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/mutations.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only these breakages")
    parser.add_argument("--list", action="store_true", help="list the breakages and exit")
    parser.add_argument("-j", "--jobs", type=int, default=3, help="breakages checked at once (default 3)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per breakage's tests (default 240)")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies")
    parser.add_argument("--baseline", action="store_true",
                        help="also run every claiming test unmutated first (a claim must pass unbroken)")
    args = parser.parse_args(argv)

    names = {b.name for b in BREAKAGES}
    if len(names) != len(BREAKAGES):
        sys.exit("mutations: two breakages share a name")
    unknown = set(args.names) - names
    if unknown:
        sys.exit(f"mutations: no breakage named {', '.join(sorted(unknown))} (see --list)")
    chosen = [b for b in BREAKAGES if not args.names or b.name in args.names]
    if args.list:
        for b in chosen:
            print(f"{b.name}  [{b.file}]")
            for t in b.tests:
                print(f"    {t}")
            if b.note:
                print(f"    ({b.note})")
        return 0

    files = repo_files()
    probe = make_copy(files)
    try:
        check_imports(probe)
        if args.baseline:
            claims = sorted({t for b in chosen for t in b.tests})
            outcome, took, tail = run_tests(probe, claims, args.timeout * 4)
            if outcome != "passed":
                sys.exit(f"mutations: the claiming tests do not pass unbroken ({outcome}):\n{tail}")
            print(f"baseline: {len(claims)} claiming tests pass unbroken ({took:.0f} s)")
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    verdict, detail = judge(CANARY, files, args.timeout, False)
    if verdict != "caught":
        sys.exit(f"mutations: the canary breakage was {verdict} ({detail}): the tests are not running the copy")

    t0 = time.time()
    results = {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {b.name: pool.submit(judge, b, files, args.timeout, args.keep) for b in chosen}
        for b in chosen:
            verdict, detail = futures[b.name].result()
            results[b.name] = verdict
            mark = {"caught": "✓", "survived": "✗", "stale": "?", "unclaimed": "·", "error": "!"}[verdict]
            print(f"{mark} {verdict:9} {b.name}  ({detail.strip().splitlines()[-1] if detail.strip() else ''})",
                  flush=True)
            if verdict == "error":
                print("    " + detail.replace("\n", "\n    "))
    caught = sum(1 for v in results.values() if v == "caught")
    print(f"\n{caught}/{len(chosen)} breakages caught ({time.time() - t0:.0f} s)")
    for kind in ("survived", "stale", "unclaimed", "error"):
        which = [n for n, v in results.items() if v == kind]
        if which:
            print(f"{kind}: {', '.join(which)}")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
