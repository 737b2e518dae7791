"""The cost ledger: ``<logs>/usage.jsonl``, one JSON object per finished run.

The daemon appends one record after each run it reaps; ``tools/status.py``,
``tools/usage_report.py`` and ``tools/dashboard.py`` read it, and the daemon
keeps a ``SpendTracker`` so that budget checks never re-read the whole file
on every tick (the dashboard likewise reads on from where it stopped).

A record looks like this (every field may be missing in old or hand-edited
lines, and readers must cope)::

    {"ts": "2026-11-21T17:38:45Z", "date": "2026-11-21", "issue": 7,
     "attempt": 1, "session_id": "...", "models": ["claude-sonnet-4-6"],
     "input_tokens": 10, "output_tokens": 900, "cache_creation_tokens": 5000,
     "cache_read_tokens": 120000, "total_tokens": 125910, "cost_usd": 0.4312,
     "cost_source": "result", "num_turns": 12, "duration_ms": 312000,
     "subtype": "success", "is_error": false, "exit_reason": "exit status 0",
     "api_retries": 0, "outcome": "completed", "model_usage": {...}}

Why the data is shaped this way:

- ``date`` is the *local* date the run was recorded on. Budgets are "per day"
  in the user's sense, so a run belongs to the day the user saw it end, and
  readers group by this field without any time-zone arithmetic. ``ts`` (UTC)
  is kept for exact ordering and is the fallback when ``date`` is missing.
- Money is summed as ``Decimal`` built from each value's shortest repr, i.e.
  exactly the digits written in the file, and turned into ``float`` only in
  the returned totals. A sum of thousands of four-decimal costs therefore
  equals the hand-computed (and the CLI's own) total to the cent, with no
  binary drift. Rounding happens only on display, in ``usd()``.
- Corrupt lines (a torn write, a hand edit, a disk error) are skipped and
  counted, never fatal: ``read()`` returns a ``Scan`` whose ``corrupt``
  attribute holds the count once it has been iterated.
- ``outcome`` says how the run ended (``OUTCOMES``); lines written before it
  existed have none, and ``Run.of`` says "" for them unless ``exit_reason``
  tells. Later keys (``stage``, ``round``) are optional in the same way.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from collections import deque
from typing import Deque, Dict, Iterable, Iterator, Optional, Tuple

ZERO = Decimal(0)
CENT = Decimal("0.01")


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def stamp(record: dict, now: float) -> dict:
    """Return ``record`` with ``ts`` (UTC) and ``date`` (local) filled in if missing."""
    out = dict(record)
    out.setdefault("ts", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    out.setdefault("date", local_day(now))
    return out


def append(path, record: dict, now: Optional[float] = None) -> None:
    """Append ``record`` as one line, creating the folder if needed.

    The line goes out in a single ``write`` on an ``O_APPEND`` descriptor, so
    a concurrent reader never sees half of it, and is fsynced so a power cut
    on the Pi does not lose money already spent. Missing ``ts``/``date`` are
    filled from ``now`` (default: the current time).
    """
    record = stamp(record, time.time() if now is None else now)
    line = (json.dumps(record, separators=(", ", ": "), ensure_ascii=False) + "\n").encode("utf-8")
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

class Scan:
    """Iterator over a ledger's records that counts what it had to skip.

    ``for rec in read(path)`` streams one dict at a time (constant memory).
    After the loop, ``scan.corrupt`` is the number of skipped lines (not JSON,
    or JSON that is not an object) and ``scan.records`` the number yielded.
    Blank lines are ignored without being counted. A missing file is an empty
    ledger (``scan.exists`` is then False).
    """

    def __init__(self, path, offset: int = 0, whole_lines: bool = False):
        self.path = os.fspath(path)
        self.corrupt = 0
        self.records = 0
        # Where the next read starts: just after the last line taken. A
        # reader that keeps up with the file (the dashboard) passes it back
        # with whole_lines=True, which leaves a last line without its
        # newline (being written right now) for that next read.
        self.offset = offset
        self.whole_lines = whole_lines
        self.exists = os.path.exists(self.path)
        self._it = self._lines()

    def __iter__(self) -> "Scan":
        return self

    def __next__(self) -> dict:
        return next(self._it)

    def _lines(self) -> Iterator[dict]:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(self.offset)
            for raw in f:
                if self.whole_lines and not raw.endswith(b"\n"):
                    return
                self.offset += len(raw)
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except ValueError:  # JSONDecodeError and UnicodeDecodeError both
                    self.corrupt += 1
                    continue
                if not isinstance(rec, dict):
                    self.corrupt += 1
                    continue
                self.records += 1
                yield rec


def read(path, offset: int = 0, whole_lines: bool = False) -> Scan:
    """Stream the ledger's records; see ``Scan`` for the corrupt-line count
    and for reading on from where an earlier read stopped."""
    return Scan(path, offset, whole_lines)


# ---------------------------------------------------------------------------
# Field helpers shared by every reader
# ---------------------------------------------------------------------------

def local_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(now))


def cost(record: dict) -> Decimal:
    """The record's ``cost_usd`` as an exact Decimal; 0 if missing or not a number."""
    value = record.get("cost_usd")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ZERO
    try:
        d = Decimal(repr(value))
    except InvalidOperation:
        return ZERO
    return d if d.is_finite() else ZERO


def record_day(record: dict) -> Optional[str]:
    """The local ``YYYY-MM-DD`` a record counts for, or None if it cannot tell.

    ``date`` wins (it was written in the daemon's local time); else ``ts`` is
    converted from UTC to local time.
    """
    day = record.get("date")
    if isinstance(day, str) and len(day) == 10:
        try:
            _dt.date.fromisoformat(day)
            return day
        except ValueError:
            pass
    when = _ts_epoch(record.get("ts"))
    return None if when is None else local_day(when)


def _ts_epoch(ts) -> Optional[float]:
    """A ``ts`` string (UTC, ISO 8601) as epoch seconds, or None."""
    if not isinstance(ts, str):
        return None
    try:
        when = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def day_start(day: str) -> float:
    """Local midnight at the start of ``YYYY-MM-DD`` (a valid date)."""
    return time.mktime(time.strptime(day, "%Y-%m-%d"))


def record_time(record: dict) -> Optional[float]:
    """When the run was recorded, in epoch seconds: ``ts``, else local
    midnight of ``date`` (a hand-written line), else None."""
    when = _ts_epoch(record.get("ts"))
    if when is not None:
        return when
    day = record_day(record)
    return None if day is None else day_start(day)


def tokens(record: dict, key: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value)


# ---------------------------------------------------------------------------
# One run, read once
# ---------------------------------------------------------------------------

TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
# How a run ended, as the daemon records it. "completed" ended with a pull
# request (a draft one too); "failed" may still be retried; a startup error
# and a person's cancel are not the task's own failure.
COMPLETED, FAILED, BLOCKED = "completed", "failed", "blocked"
OUTCOMES = (COMPLETED, FAILED, BLOCKED, "stopped", "startup_error", "cancelled")


def outcome_of(record: dict) -> str:
    """How the run ended (one of OUTCOMES), or "" when the line does not say."""
    outcome = record.get("outcome")
    if outcome in OUTCOMES:
        return outcome
    # An older line: the exit reason names the kind only when there was no reason.
    return COMPLETED if record.get("exit_reason") in ("completed", "open_pr") else ""


def _whole(value) -> Optional[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _label(value) -> Optional[str]:
    """A stage or round as shown: a short string, or None when absent."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text[:60] or None


# The model lists seen, each kept once: a memo that grows with the number of
# distinct lists (a handful), never with the number of runs.
_MODEL_SETS: Dict[Tuple[str, ...], Tuple[str, ...]] = {}


class Run:
    """One ledger record with each field checked once, the way every reader
    needs it; ``Run.of(record)`` never raises.

    A reader that keeps runs in memory (the dashboard) holds these rather
    than the parsed dicts: a third of the size, and the day, the tokens and
    the exact cost are worked out once instead of on every page.
    """
    __slots__ = ("time", "day", "issue", "attempt", "models", "input_tokens", "output_tokens",
                 "cache_creation_tokens", "cache_read_tokens", "total_tokens", "cost",
                 "duration_s", "outcome", "stage", "round", "model_costs")

    @classmethod
    def of(cls, record: dict) -> "Run":
        run = cls()
        run.day = record_day(record)
        when = _ts_epoch(record.get("ts"))
        run.time = when if when is not None else (None if run.day is None else day_start(run.day))
        if run.day is not None:
            run.day = sys.intern(run.day)
        run.issue = _whole(record.get("issue"))
        run.attempt = _whole(record.get("attempt"))
        models = record.get("models")
        usage = record.get("model_usage") if isinstance(record.get("model_usage"), dict) else {}
        names = models if isinstance(models, list) else list(usage)
        models = tuple(sys.intern(m) for m in names if isinstance(m, str))
        run.models = _MODEL_SETS.setdefault(models, models)  # 10,000 runs share a handful of tuples
        parts = [tokens(record, k) for k in TOKEN_KEYS]
        run.input_tokens, run.output_tokens, run.cache_creation_tokens, run.cache_read_tokens = parts
        # total_tokens as recorded if present (the CLI's own figure), else the parts.
        run.total_tokens = tokens(record, "total_tokens") if "total_tokens" in record else sum(parts)
        run.cost = cost(record)
        ms = record.get("duration_ms")
        run.duration_s = ms / 1000 if isinstance(ms, (int, float)) and not isinstance(ms, bool) \
            and 0 < ms < 1e12 else None
        run.outcome = outcome_of(record)
        run.stage, run.round = _label(record.get("stage")), _label(record.get("round"))
        # The CLI's own cost per model (modelUsage.costUSD), when a run used several.
        shares = [(m, u.get("costUSD")) for m, u in usage.items() if isinstance(u, dict)]
        shares = [(sys.intern(m), float(c)) for m, c in shares
                  if isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0]
        run.model_costs = tuple(shares) if len(shares) > 1 else ()
        return run

    def cost_by_model(self) -> Iterator[Tuple[str, float]]:
        """(model, dollars) summing to the run's cost: split by the CLI's
        per-model costs where it gave them, else evenly."""
        total = float(self.cost)
        weights = self.model_costs or tuple((m, 1.0) for m in self.models) or (("(unknown model)", 1.0),)
        whole = sum(w for _, w in weights)
        for model, weight in weights:
            yield model, total * weight / whole if whole else total / len(weights)


# ---------------------------------------------------------------------------
# Time ranges: the dashboard's filters and usage_report.py --range
# ---------------------------------------------------------------------------

RANGES = {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days",
          "month": "this month", "all": "all time"}


def range_start(name: str, now: float) -> Optional[float]:
    """The first second of a range (runs recorded at or after it count), or
    None for "all". 24h, 7d and 30d are rolling; "month" starts at local
    midnight on the 1st. Raises KeyError for a name not in RANGES."""
    if name not in RANGES:
        raise KeyError(name)
    if name == "all":
        return None
    if name == "month":
        return day_start(local_day(now)[:8] + "01")
    return now - {"24h": 1, "7d": 7, "30d": 30}[name] * 86400.0


# ---------------------------------------------------------------------------
# Spend and budgets
# ---------------------------------------------------------------------------

@dataclass
class Spend:
    today_usd: float
    month_usd: float
    day: str    # local "YYYY-MM-DD" the totals are for
    month: str  # local "YYYY-MM"


def spend(path, now: float) -> Spend:
    """Today's and this month's totals (local time) from the whole ledger."""
    tracker = SpendTracker(path, now)
    return tracker.totals(now)


RUN_OUTCOMES = (COMPLETED, BLOCKED, FAILED)   # the runs a success rate counts
RECENT_RUNS = 20
OUTCOME_DAYS = 14


class SpendTracker:
    """The daemon's in-memory running totals: spend and run outcomes.

    Built from one read of the ledger; afterwards ``add`` each record the
    daemon appends. Sums are kept per local day for the current month only
    (at most 31 numbers), so ``totals`` rolls over by itself: after midnight
    the new day's key has no entries yet (today = 0) and after the first of
    the month the previous month's days are dropped. Outcomes are kept for
    the last RECENT_RUNS runs and per day for OUTCOME_DAYS days (``success``).
    ``corrupt`` is the number of lines the initial read skipped.
    """

    def __init__(self, path, now: float):
        self._start()
        scan = read(path)
        self._count(((record_day(rec), cost(rec), outcome_of(rec)) for rec in scan), now)
        self.corrupt = scan.corrupt

    @classmethod
    def of_runs(cls, runs: Iterable[Run], now: float, corrupt: int = 0) -> "SpendTracker":
        """The same totals from runs already read (the dashboard keeps them)."""
        tracker = cls.__new__(cls)
        tracker._start()
        tracker._count(((r.day, r.cost, r.outcome) for r in runs), now)
        tracker.corrupt = corrupt
        return tracker

    def _start(self) -> None:
        self._by_day: Dict[str, Decimal] = {}
        self._recent: Deque[str] = deque(maxlen=RECENT_RUNS)
        self._outcomes: Dict[str, Dict[str, int]] = {}

    def _count(self, rows: Iterable[Tuple[Optional[str], Decimal, object]], now: float) -> None:
        month = local_day(now)[:7]
        for day, amount, outcome in rows:
            # Later months are kept too: a clock that stepped back must not
            # lose runs recorded "in the future".
            if day is not None and day[:7] >= month:
                self._by_day[day] = self._by_day.get(day, ZERO) + amount
            self._tally(outcome, day)
        self._trim(now)

    def add(self, record: dict, now: float) -> None:
        day = record_day(record) or local_day(now)
        self._by_day[day] = self._by_day.get(day, ZERO) + cost(record)
        self._tally(outcome_of(record), day)
        self._trim(now)

    def _tally(self, outcome: object, day: Optional[str]) -> None:
        if outcome not in RUN_OUTCOMES:
            return
        self._recent.append(outcome)
        if day is not None:
            counts = self._outcomes.setdefault(day, {k: 0 for k in RUN_OUTCOMES})
            counts[outcome] += 1

    def _trim(self, now: float) -> None:
        oldest = local_day(now - OUTCOME_DAYS * 86400)
        for old in [d for d in self._outcomes if d <= oldest]:
            del self._outcomes[old]

    def success(self) -> dict:
        """For metrics.json: the last runs' outcomes and each day's."""
        recent = list(self._recent)
        done = recent.count(COMPLETED)
        return {"last_runs": len(recent), "last_completed": done,
                "last_rate": round(done / len(recent), 3) if recent else None,
                "by_day": {d: dict(c) for d, c in sorted(self._outcomes.items())}}

    def totals(self, now: float) -> Spend:
        day = local_day(now)
        month = day[:7]
        for old in [d for d in self._by_day if d[:7] < month]:
            del self._by_day[old]
        month_sum = sum((v for d, v in self._by_day.items() if d[:7] == month), ZERO)
        return Spend(
            today_usd=float(self._by_day.get(day, ZERO)),
            month_usd=float(month_sum),
            day=day,
            month=month,
        )


def usd(amount: Optional[float], fine: bool = False) -> str:
    """Money as users see it everywhere: ``$5.02``; ``-`` when unknown.

    Rounded half-up on the decimal digits (``repr``), as a person rounds by
    hand: $3.005 shows as $3.01, where float formatting would say $3.00.
    `fine` (one run's transcript) keeps four decimals below a dollar: ``$0.0017``.
    """
    if amount is None:
        return "-"
    try:
        exact = Decimal(repr(float(amount)))
        step = Decimal("0.0001") if fine and abs(exact) < 1 else CENT
        return "${:,}".format(exact.quantize(step, rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError, OverflowError):
        return "$?"


def budget_block(spend: Spend, daily_usd: Optional[float], monthly_usd: Optional[float]) -> str:
    """Why spawning must stop for budget reasons, or "" if it may go on.

    A budget of None or 0 means no limit (config.toml's ``[budget]`` keys
    default to 0 = off). The monthly reason is given first when both are
    reached, because it will not clear at midnight and the user needs to know.
    """
    if monthly_usd and spend.month_usd >= monthly_usd:
        return "monthly budget reached: {} of {} in {}".format(
            usd(spend.month_usd), usd(monthly_usd), spend.month)
    if daily_usd and spend.today_usd >= daily_usd:
        return "daily budget reached: {} of {} today".format(
            usd(spend.today_usd), usd(daily_usd))
    return ""
