"""Redaction applied to every transcript field before it is written: e-mails, phones, card numbers.

- e-mail addresses -> `[email]`
- payment card numbers: 13 to 19 digits, optionally grouped with spaces or dashes, that pass the
  Luhn check -> `[card]` (a digit run that fails Luhn is left alone: order numbers, timestamps)
- phone numbers -> `[phone]`: international (`+44 20 7946 0018`, `+1 (415) 555-2671`,
  `0044 7700 900123`) and UK national (`07700 900123`, `020 7946 0018`, `(0161) 496 0000`,
  `+44 (0)7700 900123`)

Order matters: e-mails first (a local part may hold digits), then cards, then phones.
"""
from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, single spaces or dashes between them; not glued to other digits or a leading '+'.
CARD = re.compile(r"(?<![\d+])\d(?:[ -]?\d){12,18}(?!\d)")
# International: '+' or '00', country code, then groups (a '(0)' trunk marker is allowed).
PHONE_INTL = re.compile(
    r"(?<![\w+])(?:\+|00)\s?[1-9]\d{0,3}(?:[\s.-]?(?:\(0\)|\(\d{1,5}\)|\d{1,5})){1,6}(?!\d)")
# UK national: trunk 0, area/mobile prefix, then one or two groups; 10 or 11 digits in all.
PHONE_UK = re.compile(r"(?<![\w+])(?:\(0\d{2,5}\)|0\d{2,5})[\s.-]?\d{3,4}(?:[\s.-]?\d{3,4})?(?!\d)")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _card(m: re.Match[str]) -> str:
    digits = _digits(m.group(0))
    if 13 <= len(digits) <= 19 and luhn_ok(digits):
        return "[card]"
    return m.group(0)


def _intl(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = _digits(text.replace("(0)", ""))
    if text.startswith("00"):
        digits = digits[2:]
    return "[phone]" if 7 <= len(digits) <= 15 else text


def _uk(m: re.Match[str]) -> str:
    return "[phone]" if 10 <= len(_digits(m.group(0))) <= 11 else m.group(0)


def redact(text: str) -> str:
    if not text:
        return text
    text = EMAIL.sub("[email]", text)
    text = CARD.sub(_card, text)
    text = PHONE_INTL.sub(_intl, text)
    return PHONE_UK.sub(_uk, text)
