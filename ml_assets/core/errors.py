"""An error with the errors it was raised from or during: what tells a full disk or a lost server apart
from a bug, whatever a library wrapped them in."""

from __future__ import annotations

from collections.abc import Iterator


def chain(error: BaseException | None) -> Iterator[BaseException]:
    """`error`, then the error it was raised from (or during), and so on; each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
