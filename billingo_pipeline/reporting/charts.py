"""Bar charts small enough for the Dagster UI to show inline: pure functions, no Dagster.

Dagster 1.13's UI renders a markdown metadata value in place (on the asset's overview, its
partitions and events) only while the markdown is shorter than 1,000 characters; anything longer
is put behind a "[Show Markdown]" link. A PNG of any use is several kilobytes, so the charts are
SVG written here by hand, sized to stay under that limit whatever the figures: fixed geometry,
integer coordinates, named colours (a ``#`` would end the data URI) and amounts in at most six
characters (``compact_amount``). ``inline_image_markdown`` refuses a chart that would not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

# The UI's cut-off, in characters of the markdown string (MetadataEntry.tsx in dagster-webserver).
INLINE_MARKDOWN_LIMIT = 1000
CURRENT_COLOUR = "steelblue"
OVERDUE_COLOUR = "firebrick"
_SVG_NAMESPACE = "http://www.w3.org/2000/svg"
_PLOT_TOP = 30  # room for the title and the tallest bar's amount
_PLOT_HEIGHT = 100
_LABEL_GAP = 14


class ChartTooLong(ValueError):
    """A chart whose markdown the UI would hide behind a link."""


@dataclass(frozen=True)
class Bar:
    label: str  # at most 8 characters, printed under the bar
    value: Decimal
    overdue: bool = False


def compact_amount(value: Decimal) -> str:
    """At most six characters: 950, 12.5k, 1.2M, 34.0bn (negative values keep their sign)."""
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    for scale, suffix in ((Decimal(10) ** 9, "bn"), (Decimal(10) ** 6, "M"), (Decimal(10) ** 3, "k")):
        if magnitude >= scale:
            scaled = magnitude / scale
            text = f"{scaled:.0f}" if scaled >= 100 else f"{scaled:.1f}"
            return f"{sign}{text}{suffix}"
    return f"{sign}{magnitude:.0f}"


def bar_chart_svg(bars: Sequence[Bar], title: str, *, bar_width: int = 48, value_labels: bool = True) -> str:
    """Vertical bars from a common baseline (negative values count as 0), current and overdue in
    two colours, each bar's label under it and, with ``value_labels``, its amount above it."""
    if not bars:
        raise ValueError("a chart needs at least one bar")
    gap = max(bar_width // 6, 2)
    step = bar_width + gap
    width = step * len(bars) + gap
    baseline = _PLOT_TOP + _PLOT_HEIGHT
    height = baseline + _LABEL_GAP + 4
    tallest = max(max(bar.value, Decimal(0)) for bar in bars)
    # One path per colour, each bar a relative move from where the previous one of its colour
    # ended: the shortest SVG for a row of rectangles.
    paths: dict[str, list[str]] = {CURRENT_COLOUR: [], OVERDUE_COLOUR: []}
    path_ends: dict[str, int | None] = {CURRENT_COLOUR: None, OVERDUE_COLOUR: None}
    labels, amounts = [], []
    for index, bar in enumerate(bars):
        left = gap + index * step
        centre = left + bar_width // 2
        value = max(bar.value, Decimal(0))
        # A positive amount is at least one pixel tall, so no bar with an amount above it is missing.
        bar_height = max(round(value * _PLOT_HEIGHT / tallest), 1) if value > 0 else 0
        colour = OVERDUE_COLOUR if bar.overdue else CURRENT_COLOUR
        if bar_height:
            end = path_ends[colour]
            move = f"M{left},{baseline}" if end is None else f"m{left - end},0"
            paths[colour].append(f"{move}v-{bar_height}h{bar_width}v{bar_height}")
            path_ends[colour] = left + bar_width
        labels.append(f"<tspan x='{centre}'>{_escape(bar.label)}</tspan>")
        if value_labels:
            amounts.append(f"<tspan x='{centre}' y='{baseline - bar_height - 3}'>{compact_amount(bar.value)}</tspan>")
    shapes = "".join(f"<path fill='{colour}' d='{''.join(parts)}'/>" for colour, parts in paths.items() if parts)
    texts = f"<text x='{width // 2}' y='14' font-weight='bold'>{_escape(title)}</text>"
    texts += f"<text y='{baseline + _LABEL_GAP}'>{''.join(labels)}</text>"
    if amounts:
        texts += f"<text>{''.join(amounts)}</text>"
    return (
        f"<svg xmlns='{_SVG_NAMESPACE}' width='{width}' height='{height}' font-family='sans-serif' "
        f"font-size='11' text-anchor='middle'>{shapes}{texts}</svg>"
    )


def inline_image_markdown(svg: str, alt: str) -> str:
    """The SVG as a markdown image the UI shows in place (a data URI; spaces encoded, since a
    markdown link target cannot hold them)."""
    markdown = f"![{_escape(alt)}](data:image/svg+xml,{svg.replace(' ', '%20')})"
    if len(markdown) >= INLINE_MARKDOWN_LIMIT:
        raise ChartTooLong(f"chart markdown is {len(markdown)} characters, the UI shows under {INLINE_MARKDOWN_LIMIT} inline")
    return markdown


def _escape(text: str) -> str:
    # Markup characters, and the ones that would end the data URI or the markdown link early.
    for character, replacement in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("'", "&apos;"),
                                   ("#", ""), ("(", ""), (")", ""), ("[", ""), ("]", ""), ("%", "")):
        text = text.replace(character, replacement)
    return text
