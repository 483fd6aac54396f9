"""Hungarian alphabetical order for SQLite, matching PostgreSQL's ICU ``hu-HU`` collation.

PostgreSQL sorts partner names with ICU (migration 0007 creates ``hu_hu_icu``); SQLite has no
ICU, so every SQLite connection registers a collation of the same name backed by
``compare_hungarian``. The rules are those of Hungarian dictionaries, as ICU's CLDR ``hu`` data
encodes them:

- the alphabet is a á b c cs d dz dzs e é f g gy h i í j k l ly m n ny o ó ö ő p q r s sz t ty
  u ú ü ű v w x y z zs, where ``cs dz dzs gy ly ny sz ty zs`` are single letters (``Csányi``
  comes after every ``C...`` name such as ``Cukor``) and ``ö``/``ü`` are letters of their own
  after ``o``/``u``;
- a long vowel is the same letter as its short pair (``á`` = ``a``, ``ő`` = ``ö``): it only
  breaks a tie, short first, so ``Kárpát`` sorts before ``Kiss`` and ``Sóskúti`` before
  ``Steiner`` (``ó`` ranks with ``o``, before ``t``);
- a doubled digraph is written shortened (``ccs``, ``ssz``, ``nny``, ...) and sorts as the two
  letters it stands for (``hosszú`` = ``hosz`` + ``szú``);
- case breaks the remaining ties, lower case first; then the text itself, as PostgreSQL's
  deterministic collations do, so that only identical strings compare equal.

What ICU does beyond that (the ambiguity of a digraph across a compound's seam, such as
``pácsó``, which ICU too reads as ``cs``) is not modelled. Spaces, punctuation, symbols and
digits sort before letters, in that order, as in ICU's root order.
"""

from __future__ import annotations

import functools
import unicodedata

__all__ = ["COLLATION_NAME", "compare_hungarian", "hungarian_sort_key"]

#: The name both dialects know the collation by (``COLLATE hu_hu_icu``).
COLLATION_NAME = "hu_hu_icu"

# Primary letters in order; a long vowel shares its short pair's primary weight.
_ALPHABET = (
    "a b c cs d dz dzs e f g gy h i j k l ly m n ny o ö p q r s sz t ty u ü v w x y z zs".split()
)
_LETTER_RANK = {letter: rank for rank, letter in enumerate(_ALPHABET)}
_DIGRAPHS = sorted((letter for letter in _ALPHABET if len(letter) > 1), key=len, reverse=True)
# Long vowels: (the letter they rank with, the secondary weight that puts them after it).
_LONG_VOWELS = {"á": "a", "é": "e", "í": "i", "ó": "o", "ő": "ö", "ú": "u", "ű": "ü"}
_OWN_LETTERS = {"ö", "ü"}  # letters of their own, not an o/u with an accent
# Letters with a stroke do not decompose, yet ICU ranks them as their base letter plus a mark.
_STROKED = {"ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t"}

# Primary groups, lowest first, as ICU's root order ranks them.
_SPACE, _PUNCTUATION, _SYMBOL, _DIGIT, _LATIN, _OTHER = range(6)


def _case(text: str) -> int:
    if text.islower() or not any(ch.isalpha() for ch in text):
        return 0
    return 2 if text.isupper() else 1


def _latin_letter(ch: str) -> tuple[str, tuple[int, ...]] | None:
    """``ch`` (one lower-case character) as (base Latin letter, secondary accents), if Latin."""
    if ch in _LONG_VOWELS:
        return _LONG_VOWELS[ch], (1,)
    if ch in _OWN_LETTERS:
        return ch, ()
    if ch in _STROKED:
        return _STROKED[ch], (0x10000,)
    decomposed = unicodedata.normalize("NFD", ch)
    base, marks = decomposed[0], decomposed[1:]
    if "a" <= base <= "z":
        return base, tuple(1 + ord(mark) for mark in marks)
    return None


def _base(ch: str) -> str:
    latin = _latin_letter(ch) if ch not in _LONG_VOWELS and ch not in _OWN_LETTERS else None
    return latin[0] if latin is not None else ch


def _elements(text: str) -> list[tuple[tuple[int, int], tuple[int, ...], int]]:
    """``text`` as collation elements: (primary, secondary, tertiary) for each letter or sign."""
    text = unicodedata.normalize("NFC", text)
    # Digraphs are found on base letters, as ICU finds them in decomposed text ("dź" is a "dz").
    bases = "".join(_base(ch.lower()[0]) for ch in text)
    elements = []
    i = 0
    while i < len(text):
        match = next((d for d in _DIGRAPHS if bases.startswith(d, i)), None)
        if match is None:
            # A shortened doubled digraph: ccs = cs + cs, ddzs = dzs + dzs, ssz = sz + sz.
            doubled = next(
                (d for d in _DIGRAPHS if bases.startswith(d[0] + d, i)), None
            )
            if doubled is not None:
                span = len(doubled) + 1
                case = _case(text[i:i + span])
                element = ((_LATIN, _LETTER_RANK[doubled]), (), case)
                # The tertiary 3 keeps "ccs" just apart from a written-out "cscs".
                elements += [element, (element[0], (), 3 + case)]
                i += span
                continue
            ch = text[i]
            low = ch.lower()[0]
            i += 1
            if unicodedata.category(ch).startswith("M"):
                continue  # a stray combining mark: ICU ignores it at the primary level too
            latin = _latin_letter(low)
            if low == "ß":  # ICU: "ss" with a secondary difference
                elements += [((_LATIN, _LETTER_RANK["s"]), (0x10000,), 0)] * 2
            elif latin is not None:
                base, secondary = latin
                elements.append(((_LATIN, _LETTER_RANK[base]), secondary, _case(ch)))
            elif ch.isspace():
                elements.append(((_SPACE, ord(ch)), (), 0))
            elif ch.isdigit():
                elements.append(((_DIGIT, unicodedata.digit(ch, ord(ch))), (), 0))
            else:
                category = unicodedata.category(ch)
                group = _PUNCTUATION if category.startswith("P") else _SYMBOL if category.startswith("S") else _OTHER
                elements.append(((group, ord(low)), (), _case(ch)))
            continue
        span = len(match)
        marks = tuple(m for c in text[i:i + span] for m in (_latin_letter(c.lower()) or ("", ()))[1])
        elements.append(((_LATIN, _LETTER_RANK[match]), marks, _case(text[i:i + span])))
        i += span
    return elements


def hungarian_sort_key(text: str) -> tuple:
    """A key that sorts strings in Hungarian alphabetical order (see the module docstring)."""
    elements = _elements(text)
    return (
        tuple(e[0] for e in elements),
        tuple(e[1] for e in elements),
        tuple(e[2] for e in elements),
        text,
    )


@functools.lru_cache(maxsize=65_536)
def _cached_key(text: str) -> tuple:
    return hungarian_sort_key(text)


def compare_hungarian(left: str, right: str) -> int:
    """-1, 0 or 1, as SQLite's ``create_collation`` wants; 0 only for identical strings."""
    a, b = _cached_key(left), _cached_key(right)
    return (a > b) - (a < b)
