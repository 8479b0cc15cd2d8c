"""`bench --compare`: each mode against the baseline, with its verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from ..core.formatting import ms
from .tables import Col, Fitted, mode_label, note_lines

if TYPE_CHECKING:
    from ..benchmark.regression import Comparison


def verdict(ch: Any) -> str:
    if ch.regressed:
        return "REGRESSED"
    return "cannot tell" if ch.blind else ("faster" if ch.improved else "same")


def comparison_lines(c: Comparison) -> list[Any]:
    level = f"{100 * c.to_dict()['level']:.0f}%"
    table = Fitted([Col("model", "left", key=True), Col("batch", key=True), Col("mode", "left", key=True),
                    Col("before ms"), Col("after ms"), Col("new/old"), Col(f"{level} interval"),
                    Col("verdict", "left")],
                   title=f"against the baseline (regression: the {level} interval of new/old lies above "
                         f"{1 + c.threshold / 100:.2f})")
    for ch in c.changes:
        table.add_row(ch.model, str(ch.batch), mode_label(ch.mode, ch.frozen), ms(ch.before_ms), ms(ch.after_ms),
                      f"×{ch.ratio:.3f}", f"×{ch.ratio_low:.3f} to ×{ch.ratio_high:.3f}", verdict(ch))
    pieces: list[Any] = [table]
    if any(ch.judged_on == "normalized" for ch in c.changes):
        pieces.append(Text("new/old: of each step ÷ a reference matrix product timed beside it, so that the "
                           "machine's own change of speed cancels; the step's own new/old is raw_ratio in the JSON",
                           style="dim"))
    return pieces + note_lines(c.notes)
