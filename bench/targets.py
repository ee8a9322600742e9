"""The target of every row of the benchmark, stated once (`TARGETS`, keyed by case)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A bound on a case's ratio."""

    at_most: bool
    """True: ratio ≤ bound; False: ratio ≥ bound."""
    bound: float
    source: str
    """Where the target is set."""

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.bound:g}"

    def met(self, ratio: float) -> bool:
        """Whether `ratio` meets the bound (never for NaN)."""
        return ratio <= self.bound if self.at_most else ratio >= self.bound


TARGETS: dict[str, Target | None] = {
    "1": Target(True, 1.5, "issue 6"),
    "2": Target(False, 100, "issue 6"),
    "3": Target(False, 0.4, "issue 13 item 4 (0.6 in issue 6)"),
    "4": Target(True, 1.5, "issue 13 item 4 (was JSON/.npz ≥ 5 in issue 6)"),
    "4 JSON in": None,
    "4 JSON/.npz": None,
    "5 slope": Target(True, 1.2, "issue 6"),
    "5 memory, numerics": Target(True, 3, "issue 6"),
    "5 memory, server .npz": Target(True, 3, "issue 6"),
    "5 memory, server JSON": Target(True, 1.5, "issue 6"),
    "6a": Target(True, 1.3, "issue 14"),
    "6a gradient only": None,
    "6b": Target(True, 1.5, "issue 14"),
    "6c": Target(True, 1.3, "issue 27"),
    "6c pair": None,
    "7": Target(
        True, 1.5, "issue 25 item 7 (was ≤ 2.5 over the service's numerics, issue 18 item 6)"
    ),
    "7 numerics": None,
    "7 torch": None,
    "7 memory": Target(True, 6, "issue 18 item 6"),
    "8": Target(True, 1.5, "issue 20 item 5"),
    "8 HVP slope": Target(True, 1.2, "issue 20 item 5"),
    "9": Target(True, 1.3, "issue 29 item 6"),
    "9 torch check": None,
    "9 memory": Target(True, 3, "issue 29 item 6"),
    "9 healthz": Target(True, 1.0, "issue 29 (done when: under 1 s)"),
}
"""Every row's target, keyed by case; None: the row is information only. The table lists the
rows in this order."""
