"""Search (`q=`): the words of a query, what each backend is asked, and SQLite's rank.

A query's words are its runs of letters and digits (in NFC; anything else separates them).
Every word must match a word of the task's title or description, the last one as a prefix
("inv" finds "invoice"), without regard to case or accents. Each backend folds case and
accents and splits the task's text itself, the query's words the same way as the text:

- PostgreSQL: `taskapi_search_document(title, description)` (migration 0004): the text
  through `unaccent` and the `simple` configuration (lower case, no stemming, no stop
  words), the title weighted A and the description D, under a GIN index with the owner
  (`btree_gin`); the words as a `tsquery` of quoted terms joined by `&`, the last `:*`,
  through `unaccent` too;
- SQLite: an FTS5 table over title and description (`unicode61 remove_diacritics 2`); the
  words as quoted FTS5 terms (all must match), the last with `*`.

`sort=relevance` orders by a rank that depends on the task and the query alone, never on
other tasks (so keyset pages hold while tasks are created and changed between them):
PostgreSQL's `ts_rank` over the weighted document; on SQLite `rank` below, registered on
every connection as `taskapi_rank`. The two backends' ranks differ in scale, not in spirit:
title matches count ten times description matches.
"""

from __future__ import annotations

import re
import unicodedata

import orjson

MAX_QUERY_LENGTH = 200
_WORD = re.compile(r"[^\W_]+")
TITLE_WEIGHT = 1.0
DESCRIPTION_WEIGHT = 0.1


def words(q: str) -> tuple[str, ...]:
    """The words of a query, as written (NFC): runs of letters and digits."""
    return tuple(_WORD.findall(unicodedata.normalize("NFC", q)))


def fold(text: str) -> str:
    """Text without case or accents (compatibility decomposition, marks dropped, casefold)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def postgres_query(found: tuple[str, ...]) -> str:
    """The `tsquery` text of the words: each quoted (a word holds no quote), `&` between
    them, the last a prefix."""
    *whole, last = found
    return " & ".join([*(f"'{word}'" for word in whole), f"'{last}':*"])


def sqlite_match(found: tuple[str, ...]) -> str:
    """The FTS5 query of the words: each a quoted string (a word holds no quote), all of
    which must match, the last a prefix."""
    *whole, last = found
    return " ".join([*(f'"{word}"' for word in whole), f'"{last}"*'])


def rank_words(found: tuple[str, ...]) -> str:
    """The folded words, as SQLite's `taskapi_rank` takes them (a JSON array)."""
    return orjson.dumps([fold(word) for word in found]).decode()


def rank(title: str | None, description: str | None, folded_words: str) -> float:
    """SQLite's rank of a task for a query: for each word, the words of the title it
    matches (the last word as a prefix) weigh `TITLE_WEIGHT` each, those of the description
    `DESCRIPTION_WEIGHT`. A function of the task and the query alone."""
    query: list[str] = orjson.loads(folded_words)
    if not query:
        return 0.0
    score = 0.0
    for text, weight in ((title, TITLE_WEIGHT), (description, DESCRIPTION_WEIGHT)):
        if not text:
            continue
        tokens = _WORD.findall(fold(text))
        *whole, last = query
        hits = sum(1 for token in tokens if token in whole or token.startswith(last))
        score += weight * hits
    return score
