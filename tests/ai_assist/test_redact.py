"""Redaction of e-mails, phone numbers and card numbers before transcripts are written."""
from __future__ import annotations

import pytest

from ai_assist.redact import luhn_ok, redact


@pytest.mark.parametrize("text, expected", [
    ("mail me at jane.doe+quotes@example.co.uk please", "mail me at [email] please"),
    ("A.B_C-9@sub.domain.io", "[email]"),
    ("two: a@b.com, c@d.org", "two: [email], [email]"),
])
def test_emails(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("phone", [
    "07700 900123", "07700900123", "07700-900-123", "020 7946 0018", "0161 496 0000", "(0161) 496 0000",
    "01632 960 001", "+44 7700 900123", "+44 (0)20 7946 0018", "+447700900123", "0044 7700 900123",
    "+1 (415) 555-2671", "+1 415 555 2671", "+33 1 23 45 67 89", "+49 30 901820", "+91-98765-43210",
    "+353 1 234 5678",
])
def test_phones(phone: str) -> None:
    assert redact(f"call me on {phone} tonight") == "call me on [phone] tonight"


@pytest.mark.parametrize("card", [
    "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "5500 0000 0000 0004",
    "3782 822463 10005", "6011 0009 9013 9424", "4222222222222",  # 13-digit Visa
    "6304 0000 0000 0000 018",  # 19 digits
])
def test_cards(card: str) -> None:
    assert luhn_ok("".join(c for c in card if c.isdigit()))
    assert redact(f"my card is {card}, thanks") == "my card is [card], thanks"


@pytest.mark.parametrize("text", [
    "booking 4111 1111 1111 1112 failed",   # fails Luhn: not a card
    "job #12345 at 10:30 on 2025-03-14",     # ordinary numbers
    "costs 250 GBP for 3 hours",
    "reference 1234-5678",
    "no personal data here",
])
def test_leaves_other_numbers_alone(text: str) -> None:
    assert redact(text) == text


def test_mixed() -> None:
    text = "I'm bob@example.com, 07700 900123, card 4111 1111 1111 1111, flat 12."
    assert redact(text) == "I'm [email], [phone], card [card], flat 12."


def test_empty() -> None:
    assert redact("") == ""
