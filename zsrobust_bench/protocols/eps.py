"""Epsilon radii as text and back: '4/255' labels for multiples of 1/255, plain numbers otherwise.

The one place eps labels are made: results.json keys (`robust_acc_by_eps`), the leaderboard's
columns and the CLI all use these two functions.
"""

from __future__ import annotations

from fractions import Fraction

from ..errors import ZSBenchError


def eps_label(eps: float) -> str:
    """Human label for an epsilon: '1/255' when it is a multiple of 1/255 (0 is '0/255'), else the number."""
    frac = Fraction(eps * 255).limit_denominator(1000)
    if abs(float(frac) - eps * 255) < 1e-9 and frac.denominator == 1:
        return f"{frac.numerator}/255"
    return f"{eps:g}"


def parse_eps(text: str) -> float:
    """Parse '1/255', '4/255' or a float (the inverse of `eps_label`)."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except ValueError as exc:
        raise ZSBenchError(f"cannot parse epsilon {text!r}", "use a number or a fraction like 4/255") from exc
