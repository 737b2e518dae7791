"""SVG charts for the dashboard, drawn on the server as text.

Not a tool itself (hence the underscore). Pure functions: numbers in, one
HTML ``<figure>`` out, holding the chart's ``<svg>`` and its text
alternative (a table of every number drawn). No JavaScript and nothing
fetched: the page must work offline, in any browser, on a Pi.

Every chart is an ``<svg class="chart" data-chart=NAME data-points=N>``
with ``role="img"``, a ``<title>`` and a ``<desc>``; each drawn data point
(a bar, a dot, a heatmap cell) has the class ``pt``, so a test can count
them. Colours are CSS classes the page styles (``s-*`` for series, ``o-*``
for outcomes). Every string that came from data passes through ``esc``.
"""
from __future__ import annotations

import html
import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 64, 16, 44
MAX_X_LABELS = 12


def esc(value) -> str:
    """Text or an attribute value, escaped for HTML and SVG."""
    return html.escape("" if value is None else str(value), quote=True)


def _n(x: float) -> str:
    """A coordinate: one decimal is finer than a pixel."""
    return "{:.1f}".format(x)


def nice_max(value: float) -> Tuple[float, float]:
    """(axis top, tick step) for values up to ``value``: steps of 1, 2, 2.5
    or 5 times a power of ten, four or five ticks, top >= value > 0."""
    if not value > 0 or math.isinf(value):
        return 1.0, 0.25
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return round(step * math.ceil(value / step - 1e-9), 12), step


class Figure(NamedTuple):
    """What a chart function returns before wrapping: its parts."""
    svg: str
    table: str


def figure(name: str, title: str, note: str, svg: str, table: str) -> str:
    """A chart with its heading, a note on what it shows, and its numbers."""
    return ('<figure class="fig" id="chart-{n}"><h3>{t}</h3>{svg}'
            '<figcaption>{note}</figcaption>'
            '<details><summary>The numbers</summary>{table}</details></figure>').format(
                n=esc(name), t=esc(title), svg=svg, note=esc(note), table=table)


def empty(name: str, title: str, why: str) -> str:
    return ('<figure class="fig" id="chart-{n}"><h3>{t}</h3><p class="empty">{w}</p>'
            '</figure>').format(n=esc(name), t=esc(title), w=esc(why))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join("<th>{}</th>".format(esc(h)) for h in headers)
    body = "".join("<tr>{}</tr>".format("".join("<td>{}</td>".format(esc(c)) for c in row)) for row in rows)
    return '<table class="numbers"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>'.format(head, body)


def _svg(name: str, points: int, title: str, desc: str, body: List[str],
         width: int = WIDTH, height: int = HEIGHT) -> str:
    return ('<svg class="chart" data-chart="{n}" data-points="{p}" role="img" '
            'aria-labelledby="{n}-t {n}-d" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">'
            '<title id="{n}-t">{t}</title><desc id="{n}-d">{d}</desc>{body}</svg>').format(
                n=esc(name), p=points, w=width, h=height, t=esc(title), d=esc(desc), body="".join(body))


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "middle", rotate: bool = False) -> str:
    turn = ' transform="rotate(-90 {} {})"'.format(_n(x), _n(y)) if rotate else ""
    return '<text x="{}" y="{}" text-anchor="{}"{}{}>{}</text>'.format(
        _n(x), _n(y), anchor, ' class="{}"'.format(cls) if cls else "", turn, esc(text))


def _y_axis(top: float, step: float, fmt: Callable[[float], str], label: str, right: bool = False,
            grid: bool = True, plot_top: int = TOP, plot_bottom: int = HEIGHT - BOTTOM,
            width: int = WIDTH) -> List[str]:
    """Ticks, tick labels and the axis title for one vertical axis."""
    out = []
    x = width - RIGHT if right else LEFT
    ticks = int(round(top / step))
    for i in range(ticks + 1):
        value = i * step
        y = plot_bottom - (plot_bottom - plot_top) * value / top
        if grid and not right:
            out.append('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'.format(
                LEFT, width - RIGHT, _n(y), _n(y)))
        out.append(_text(x + (6 if right else -6), y + 4, fmt(value), "tick", "start" if right else "end"))
    mid = (plot_top + plot_bottom) / 2
    out.append(_text(width - 12 if right else 14, mid, label, "axis", rotate=True))
    return out


def _x_labels(labels: Sequence[str], centre: Callable[[int], float], y: float, title: str,
              width: int = WIDTH) -> List[str]:
    """At most about MAX_X_LABELS labels, evenly spaced; the last one too
    when it is not crowded by the one before."""
    n = len(labels)
    every = max(1, math.ceil(n / MAX_X_LABELS))
    shown = list(range(0, n, every))
    if n and shown[-1] != n - 1 and n - 1 - shown[-1] >= every / 2:
        shown.append(n - 1)
    out = [_text(centre(i), y + 14, labels[i], "tick") for i in shown]
    out.append(_text((LEFT + width - RIGHT) / 2, y + 34, title, "axis"))
    return out


def _frame(bottom: float = HEIGHT - BOTTOM, width: int = WIDTH) -> str:
    return '<line class="base" x1="{}" x2="{}" y1="{}" y2="{}"/>'.format(LEFT, width - RIGHT, _n(bottom), _n(bottom))


# ---------------------------------------------------------------------------
# The charts
# ---------------------------------------------------------------------------

def cost_per_day(days: Sequence[str], labels: Sequence[str], costs: Sequence[float],
                 budget: Optional[float], usd: Callable[[float], str]) -> Figure:
    """Bars of cost per day (left axis), the running total over the range
    as a line and the monthly budget as a dashed line (right axis)."""
    name = "cost-per-day"
    n = len(days)
    cumulative, running = [], 0.0
    for c in costs:
        running += c
        cumulative.append(running)
    top, step = nice_max(max(costs) if costs else 0)
    rtop, rstep = nice_max(max([running] + ([budget] if budget else [])))
    plot_w, plot_h, bottom = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM, HEIGHT - BOTTOM
    band = plot_w / max(1, n)

    def centre(i: int) -> float:
        return LEFT + band * (i + 0.5)

    body = _y_axis(top, step, usd, "cost per day (USD)")
    body += _y_axis(rtop, rstep, usd, "running total (USD)", right=True)
    for i, (day, cost) in enumerate(zip(days, costs)):
        h = plot_h * cost / top
        body.append('<rect class="pt s-cost" x="{}" y="{}" width="{}" height="{}" data-value="{}">'
                    '<title>{}</title></rect>'.format(
                        _n(centre(i) - band * 0.35), _n(bottom - h), _n(max(1.0, band * 0.7)), _n(h),
                        "{:.4f}".format(cost), esc("{}: {}".format(day, usd(cost)))))
    line = " ".join("{},{}".format(_n(centre(i)), _n(bottom - plot_h * v / rtop)) for i, v in enumerate(cumulative))
    body.append('<polyline class="s-cum" points="{}"/>'.format(line))
    for i, v in enumerate(cumulative):
        body.append('<circle class="cum" cx="{}" cy="{}" r="2.5"><title>{}</title></circle>'.format(
            _n(centre(i)), _n(bottom - plot_h * v / rtop), esc("running total {}: {}".format(days[i], usd(v)))))
    if budget:
        y = bottom - plot_h * budget / rtop
        body.append('<line class="s-budget" x1="{}" x2="{}" y1="{}" y2="{}"/>'.format(
            LEFT, WIDTH - RIGHT, _n(y), _n(y)))
        body.append(_text(WIDTH - RIGHT - 4, y - 4, "monthly budget " + usd(budget), "note", "end"))
    body.append(_frame())
    body += _x_labels(labels, centre, bottom, "day")
    total = running
    desc = "Cost per day over {} days, {} in all{}{}.".format(
        n, usd(total), "; highest {} on {}".format(usd(max(costs)), days[costs.index(max(costs))]) if costs and max(costs) > 0 else "",
        "; monthly budget {}".format(usd(budget)) if budget else "")
    rows = [(d, usd(c), usd(cu)) for d, c, cu in zip(days, costs, cumulative)]
    return Figure(_svg(name, n, "Cost per day", desc, body), table(("Day", "Cost", "Running total"), rows))


TOKEN_SERIES = (("input", "Input", "s-in"), ("output", "Output", "s-out"),
                ("cache_read", "Cache read", "s-cr"), ("cache_write", "Cache write", "s-cw"))


def tokens_over_time(buckets: Sequence[str], labels: Sequence[str], series: Dict[str, Sequence[int]],
                     unit: str, compact: Callable[[int], str]) -> Figure:
    """Four panels sharing the time axis (input, output, cache read, cache
    write), each with its own scale: cache reads are often 1,000 times the
    output, and one shared axis would flatten everything else to zero."""
    name = "tokens"
    n = len(buckets)
    panel_h, gap = 44, 14
    height = TOP + 4 * (panel_h + gap) + BOTTOM - gap
    plot_w = WIDTH - LEFT - RIGHT
    band = plot_w / max(1, n)

    def centre(i: int) -> float:
        return LEFT + band * (i + 0.5)

    body: List[str] = []
    for k, (key, title, cls) in enumerate(TOKEN_SERIES):
        values = list(series[key])
        ptop = TOP + k * (panel_h + gap)
        pbottom = ptop + panel_h
        top, _ = nice_max(max(values) if values else 0)
        body.append(_text(LEFT - 6, ptop + 10, compact(int(top)), "tick", "end"))
        body.append(_text(LEFT - 6, pbottom, "0", "tick", "end"))
        body.append(_text(LEFT + 4, ptop + 10, "{} tokens per {}".format(title.lower(), unit), "note", "start"))
        for i, v in enumerate(values):
            h = panel_h * v / top
            body.append('<rect class="pt {}" x="{}" y="{}" width="{}" height="{}" data-value="{}">'
                        '<title>{}</title></rect>'.format(
                            cls, _n(centre(i) - band * 0.4), _n(pbottom - h), _n(max(0.8, band * 0.8)), _n(h), v,
                            esc("{} · {}: {:,} tokens".format(buckets[i], title.lower(), v))))
        body.append(_frame(pbottom))
    body.append(_text(16, (TOP + height - BOTTOM) / 2, "tokens", "axis", rotate=True))
    body += _x_labels(labels, centre, height - BOTTOM, unit)
    totals = {key: sum(series[key]) for key, _, _ in TOKEN_SERIES}
    desc = "Tokens per {} over {} {}s: {}.".format(unit, n, unit, ", ".join(
        "{} {:,}".format(title.lower(), totals[key]) for key, title, _ in TOKEN_SERIES))
    rows = [[b] + ["{:,}".format(series[key][i]) for key, _, _ in TOKEN_SERIES] for i, b in enumerate(buckets)]
    return Figure(_svg(name, 4 * n, "Tokens over time", desc, body, height=height),
                  table([unit.capitalize()] + [t for _, t, _ in TOKEN_SERIES], rows))


def cost_by_model(items: Sequence[Tuple[str, float]], usd: Callable[[float], str]) -> Figure:
    """Horizontal bars, most expensive model first."""
    name = "cost-by-model"
    n = len(items)
    row_h = 26
    label_w = 200
    height = TOP + n * row_h + BOTTOM
    plot_w = WIDTH - label_w - RIGHT
    top, step = nice_max(max([c for _, c in items] + [0]))
    body = []
    for i in range(int(round(top / step)) + 1):
        x = label_w + plot_w * i * step / top
        body.append('<line class="grid" x1="{0}" x2="{0}" y1="{1}" y2="{2}"/>'.format(_n(x), TOP, height - BOTTOM))
        body.append(_text(x, height - BOTTOM + 14, usd(i * step), "tick"))
    for i, (model, cost) in enumerate(items):
        y = TOP + i * row_h
        w = plot_w * cost / top
        body.append(_text(label_w - 8, y + row_h / 2 + 4, model, "tick", "end"))
        body.append('<rect class="pt s-model" x="{}" y="{}" width="{}" height="{}" data-value="{:.4f}">'
                    '<title>{}</title></rect>'.format(label_w, _n(y + 4), _n(w), row_h - 8, cost,
                                                      esc("{}: {}".format(model, usd(cost)))))
        body.append(_text(label_w + w + 6, y + row_h / 2 + 4, usd(cost), "note", "start"))
    body.append(_text(label_w + plot_w / 2, height - BOTTOM + 34, "cost (USD)", "axis"))
    total = sum(c for _, c in items)
    desc = "Cost by model, {} in all: {}.".format(usd(total), "; ".join("{} {}".format(m, usd(c)) for m, c in items))
    rows = [(m, usd(c), "{:.0f}%".format(100 * c / total) if total else "") for m, c in items]
    return Figure(_svg(name, n, "Cost by model", desc, body, height=height), table(("Model", "Cost", "Share"), rows))


class Dot(NamedTuple):
    minutes: float
    cost: float
    outcome: str      # a CSS class suffix: completed, failed, blocked, other
    href: str
    label: str        # the tooltip and the table row's first cell


OUTCOME_NAMES = (("completed", "Completed"), ("failed", "Failed"), ("blocked", "Blocked"), ("other", "Other"))


def cost_vs_duration(dots: Sequence[Dot], usd: Callable[[float], str], shown_of: int) -> Figure:
    """One dot per run: duration across, cost up, coloured by outcome; each
    dot links to its issue's page."""
    name = "cost-vs-duration"
    xtop, xstep = nice_max(max([d.minutes for d in dots] + [0]))
    ytop, ystep = nice_max(max([d.cost for d in dots] + [0]))
    top = TOP + 16  # the legend sits above the plot, never on a dot
    plot_w, plot_h, bottom = WIDTH - LEFT - RIGHT, HEIGHT - top - BOTTOM, HEIGHT - BOTTOM
    body = _y_axis(ytop, ystep, usd, "cost per run (USD)", plot_top=top)
    for i in range(int(round(xtop / xstep)) + 1):
        x = LEFT + plot_w * i * xstep / xtop
        body.append(_text(x, bottom + 14, "{:g}".format(i * xstep), "tick"))
    body.append(_text((LEFT + WIDTH - RIGHT) / 2, bottom + 34, "duration (minutes)", "axis"))
    body.append(_frame())
    for d in dots:
        body.append('<a href="{}"><circle class="pt o-{}" cx="{}" cy="{}" r="4" data-value="{:.4f}">'
                    '<title>{}</title></circle></a>'.format(
                        esc(d.href), esc(d.outcome), _n(LEFT + plot_w * d.minutes / xtop),
                        _n(bottom - plot_h * d.cost / ytop), d.cost, esc(d.label)))
    x = LEFT + 8
    for key, title in OUTCOME_NAMES:  # the legend
        body.append('<circle class="o-{}" cx="{}" cy="{}" r="4"/>'.format(key, _n(x), TOP - 2))
        body.append(_text(x + 8, TOP + 2, title, "note", "start"))
        x += 16 + 7 * len(title)
    counts = {key: sum(1 for d in dots if d.outcome == key) for key, _ in OUTCOME_NAMES}
    desc = "Cost against duration for {} runs{}: {}.".format(
        len(dots), " (the latest {} of {})".format(len(dots), shown_of) if shown_of > len(dots) else "",
        ", ".join("{} {}".format(counts[k], t.lower()) for k, t in OUTCOME_NAMES))
    rows = [(d.label, d.outcome, "{:.1f}".format(d.minutes), usd(d.cost)) for d in dots]
    return Figure(_svg(name, len(dots), "Cost against duration", desc, body),
                  table(("Run", "Outcome", "Minutes", "Cost"), rows))


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def heatmap(grid: Sequence[Sequence[int]]) -> Figure:
    """Runs by weekday (rows) and hour of the day (columns), local time."""
    name = "activity"
    cell, left, top = 22, 48, 16
    width, height = left + 24 * cell + 16, top + 7 * cell + 44
    biggest = max([max(row) for row in grid] + [0])
    body = []
    for d, row in enumerate(grid):
        body.append(_text(left - 6, top + d * cell + cell / 2 + 4, WEEKDAYS[d], "tick", "end"))
        for h, count in enumerate(row):
            shade = 0.08 + 0.92 * count / biggest if count and biggest else 0
            body.append('<rect class="pt {}" x="{}" y="{}" width="{}" height="{}" fill-opacity="{:.2f}" '
                        'data-value="{}"><title>{}</title></rect>'.format(
                            "heat" if count else "heat0", left + h * cell, top + d * cell, cell - 2, cell - 2,
                            shade if count else 1, count,
                            esc("{} {:02d}:00–{:02d}:59: {} run{}".format(WEEKDAYS[d], h, h, count,
                                                                        "" if count == 1 else "s"))))
    for h in range(0, 24, 3):
        body.append(_text(left + h * cell + cell / 2, top + 7 * cell + 14, "{:02d}".format(h), "tick"))
    body.append(_text(left + 12 * cell, top + 7 * cell + 34, "hour of the day (local time)", "axis"))
    total = sum(sum(row) for row in grid)
    busiest = max(((count, d, h) for d, row in enumerate(grid) for h, count in enumerate(row)), default=(0, 0, 0))
    desc = "{} runs by weekday and hour{}.".format(
        total, "; busiest {} {:02d}:00 with {}".format(WEEKDAYS[busiest[1]], busiest[2], busiest[0]) if total else "")
    rows = [[WEEKDAYS[d]] + [str(c) for c in row] for d, row in enumerate(grid)]
    return Figure(_svg(name, 7 * 24, "Activity by hour and weekday", desc, body, width=width, height=height),
                  table(["Day"] + ["{:02d}".format(h) for h in range(24)], rows))


def outcomes_per_day(days: Sequence[str], labels: Sequence[str], counts: Sequence[Dict[str, int]]) -> Figure:
    """Stacked bars of runs per day (Completed, Failed, Blocked), with the
    success rate (completed of those three) in the table and tooltips."""
    name = "outcomes"
    n = len(days)
    totals = [c["completed"] + c["failed"] + c["blocked"] for c in counts]
    top, step = nice_max(max(totals + [0]))
    if step < 1:
        top, step = max(1.0, math.ceil(top)), 1.0
    plot_w, plot_h, bottom = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM, HEIGHT - BOTTOM
    band = plot_w / max(1, n)

    def centre(i: int) -> float:
        return LEFT + band * (i + 0.5)

    def rate(c: Dict[str, int]) -> str:
        ended = c["completed"] + c["failed"] + c["blocked"]
        return "{:.0f}%".format(100 * c["completed"] / ended) if ended else "–"

    body = _y_axis(top, step, lambda v: "{:g}".format(v), "runs per day")
    points = 0
    for i, c in enumerate(counts):
        y = bottom
        for key, title in OUTCOME_NAMES[:3]:
            if not c[key]:
                continue
            h = plot_h * c[key] / top
            y -= h
            points += 1
            body.append('<rect class="pt o-{}" x="{}" y="{}" width="{}" height="{}" data-value="{}">'
                        '<title>{}</title></rect>'.format(
                            key, _n(centre(i) - band * 0.35), _n(y), _n(max(1.0, band * 0.7)), _n(h), c[key],
                            esc("{}: {} {} (success rate {})".format(days[i], c[key], title.lower(), rate(c)))))
    body.append(_frame())
    body += _x_labels(labels, centre, bottom, "day")
    ended = sum(totals)
    done = sum(c["completed"] for c in counts)
    desc = "{} runs ended over {} days: {} completed, {} failed, {} blocked; success rate {}.".format(
        ended, n, done, sum(c["failed"] for c in counts), sum(c["blocked"] for c in counts),
        "{:.0f}%".format(100 * done / ended) if ended else "–")
    rows = [(d, str(c["completed"]), str(c["failed"]), str(c["blocked"]), str(c["other"]), rate(c))
            for d, c in zip(days, counts)]
    return Figure(_svg(name, points, "Success rate per day", desc, body),
                  table(("Day", "Completed", "Failed", "Blocked", "Other", "Success rate"), rows))
