"""The pieces every command's tables share: the house style, a table that never cuts a figure, the modes'
labels, the marks on a spread (noisy, too few blocks) with their legend, and notes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..benchmark.result import MIN_BLOCKS, NOISY

MODE_LABELS = {"forward": "forward", "forward_backward": "fwd+bwd", "train_step": "train_step"}
NOISY_MARK = "!"  # the spread is above NOISY × the median
FEW_BLOCKS_MARK = "?"  # the figure rests on fewer than MIN_BLOCKS timed blocks


def styled_table(title: str | None = None) -> Table:
    """The house style: no outer edge, a rule under the header, no vertical lines."""
    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD)


def mode_label(mode: str, frozen: bool = False) -> str:
    """A mode as the tables name it: `fwd+bwd`, and ` frozen` where the freezing plan applied."""
    return MODE_LABELS.get(mode, mode) + (" frozen" if frozen else "")


def weights_cell(mode: str, frozen: bool) -> str:
    """The `weights` column: a forward pass trains nothing, so freezing does not apply to it."""
    return "-" if mode == "forward" else ("frozen" if frozen else "all")


def marked(text: str, noisy: bool, few_blocks: bool = False) -> str:
    """A figure with the marks that qualify it, as the legend below the table explains them."""
    return text + (NOISY_MARK if noisy else "") + (FEW_BLOCKS_MARK if few_blocks else "")


def marks_legend(results: Iterable[Any]) -> list[Text]:
    """What the marks in a table mean, for the marks it shows."""
    results = list(results)
    pieces = []
    if any(r.noisy for r in results):
        pieces.append(Text(f"{NOISY_MARK}: noisy, IQR above {NOISY:.0%} of the median; the machine is busy or "
                           "--min-time is too short", style="dim"))
    if any(r.few_blocks for r in results):
        pieces.append(Text(f"{FEW_BLOCKS_MARK}: rests on fewer than {MIN_BLOCKS} timed blocks, too few to judge its "
                           "spread; give --max-time more seconds", style="dim"))
    return pieces


def note_lines(notes: Iterable[str], prefix: str = "note: ") -> list[Text]:
    return [Text(f"{prefix}{n}", style="dim") for n in notes]


@dataclass(frozen=True)
class Col:
    """A column of a Fitted table."""

    header: str
    justify: JustifyMethod = "right"
    text: bool = False  # words (names, types) that may wrap; a figure never does
    key: bool = False  # names the row: repeated in every part of a split table


class Fitted:
    """A table that never cuts a figure. Where its figures fit the console it is one table (words may wrap);
    where they do not, it is split into several, each holding the row-naming key columns and as many of the
    others as fit."""

    def __init__(self, columns: Sequence[Col], title: str | None = None, collapse_padding: bool = False):
        self.columns = list(columns)
        self.title = title
        self.collapse_padding = collapse_padding
        self.rows: list[tuple[str | Text, ...]] = []

    def add_row(self, *cells: str | Text) -> None:
        self.rows.append(cells)

    def table(self, indices: Sequence[int] | None = None, *, fold: bool = False, title: str | None = None,
              caps: dict[int, int] | None = None) -> Table:
        """The table of the columns at `indices`, word columns no wider than `caps`; with `fold`, figures too
        may fold (when even one of them beside the keys is too wide: folded, never cut)."""
        indices = range(len(self.columns)) if indices is None else indices
        table = styled_table(title)
        table.collapse_padding = self.collapse_padding
        for i in indices:
            c = self.columns[i]
            table.add_column(c.header, justify=c.justify, no_wrap=not (c.text or fold),
                             overflow="fold" if c.text or fold else "ellipsis", max_width=(caps or {}).get(i))
        for row in self.rows:
            table.add_row(*(row[i] for i in indices))
        return table

    def _measure(self, console: Console, options: ConsoleOptions) -> tuple[list[int], list[int]]:
        """Each column's least width (its widest figure whole, or its longest word for a column of words) and
        its natural width (nothing wrapped)."""
        wide = options.update_width(1 << 20)
        needs, natural = [], []
        for i, c in enumerate(self.columns):
            sizes = [Measurement.get(console, wide, cell) for cell in (c.header, *(row[i] for row in self.rows))]
            needs.append(max(m.minimum if c.text else m.maximum for m in sizes))
            natural.append(max(m.maximum for m in sizes))
        return needs, natural

    def _caps(self, console: Console, options: ConsoleOptions, widths: tuple[list[int], list[int]],
              part: Sequence[int]) -> dict[int, int] | None:
        """Widths for the word columns of a part that is too wide as it is: each its longest word, and the room
        left shared out evenly. rich's own shrinking would narrow the widest first, below its longest word."""
        needs, natural = widths
        if self._width(console, options, natural, part) <= options.max_width:
            return None
        caps = {i: needs[i] for i in part if self.columns[i].text}
        room = options.max_width - self._width(console, options, needs, part)
        while room > 0 and (growing := [i for i in caps if caps[i] < natural[i]]):
            for i in growing[:room]:
                caps[i] += 1
            room -= len(growing[:room])
        return caps

    def _width(self, console: Console, options: ConsoleOptions, needs: list[int], indices: Sequence[int]) -> int:
        """The width of the columns at `indices` at their least: a table of one row of that many characters, so
        that rich's own padding rules count."""
        probe = styled_table()
        probe.collapse_padding = self.collapse_padding
        for _ in indices:
            probe.add_column("", no_wrap=True)
        probe.add_row(*("x" * needs[i] for i in indices))
        return Measurement.get(console, options.update_width(1 << 20), probe).maximum

    def parts(self, console: Console, options: ConsoleOptions, needs: list[int]) -> list[list[int]]:
        """The columns of each table: all where they fit, else the keys and the others in order, packed."""
        if self._width(console, options, needs, range(len(self.columns))) <= options.max_width:
            return [list(range(len(self.columns)))]
        keys = [i for i, c in enumerate(self.columns) if c.key]
        parts: list[list[int]] = []
        group: list[int] = []
        for i, c in enumerate(self.columns):
            if c.key:
                continue
            if group and self._width(console, options, needs, sorted([*keys, *group, i])) > options.max_width:
                parts.append(group)
                group = []
            group.append(i)
        if group:
            parts.append(group)
        return [sorted([*keys, *g]) for g in parts] or [keys]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        widths = self._measure(console, options)
        for n, part in enumerate(self.parts(console, options, widths[0])):
            if n:
                yield Text("")
            title = self.title if n == 0 else None
            if self._width(console, options, widths[0], part) > options.max_width:
                yield self.table(part, fold=True, title=title)
            else:
                yield self.table(part, title=title, caps=self._caps(console, options, widths, part))
