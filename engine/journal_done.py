"""Which inputs of a rerun a classify run's journal (`engine.journal`) skips: the done rows it holds,
counted by the file's key and by (key, the id its listing gave), and matched to the inputs as they come.
"""

from __future__ import annotations

import os
from collections import Counter

from engine.journal_rows import band_key, input_key, listed_id, path_key


class DoneRows:
    """The committed rows of one output, as `Journal` reads them when it opens, and the inputs they match.

    Args:
        written: an id or path as the output writes it (`galaxy.catalog.text.text_as_written`).
        bands: files per galaxy (`--band-columns`): a done row's path joins them (0: one file).
    """

    def __init__(self, written, bands: int = 0):
        self._written, self._bands = written, bands
        self.done: Counter[str] = Counter()  # a catalog may list one file twice: each listing is one row
        # rows by (file, the id its listing gave: the row's id less the `#N` of a repeat, `listed_id`): a
        # catalog row naming a file another row names is done only if it is that row (by path alone, a new
        # row B of file F took the done row A's place: B was never classified and A was written twice)
        self.done_by_id: Counter[tuple[str, str]] = Counter()
        self._folders: dict[str, str] = {}  # folder -> its real path, for this run (`real_path`)
        self._taken: _Taken | None = None  # made by the first `is_done`, once every done row is added

    def add(self, ident: str, path: str, begun_in: str) -> None:
        """Count a committed row (its id and path as the journal holds them; relative paths from `begun_in`)."""
        key = input_key(path, begun_in, self._written, self._folders, self._bands)
        self.done[key] += 1
        self.done_by_id[key, listed_id(self._written(ident))] += 1

    def is_done(self, path: str, ident: str | None = None, bands=()) -> bool:
        """Whether this listing of an input path is already in the catalog; each call takes one of
        the path's rows, so a file listed twice (a catalog naming it in two rows) is skipped once per
        row classified. `ident`: the id a catalog row gives it; a row of that file and id is taken (a
        catalog row naming a file another row names is not that row); `bands`: its ((band, file), ...)
        where it is one file per band (`Item.bands`), each file compared. Call it once per input, in input
        order (paths compared as `path_key`)."""
        if self._taken is None:
            self._taken = _Taken(self.done.total())  # the done rows the listing matched; `done` stays whole
        return self._take(self._taken, path, ident, bands)

    def count_new(self, items) -> int:
        """How many of `items` (`engine.listing.Item`s: this run's inputs, listed again, e.g. in another thread)
        `is_done` does not skip, taking none of their rows: a progress total. `resumed` less them had counted
        the rows of inputs no longer given too (the bar had shown 10/9 img)."""
        taken = _Taken(self.done.total())
        return sum(not self._take(taken, item.path, item.id, item.bands) for item in items)

    def _take(self, taken: _Taken, path: str, ident: str | None, bands) -> bool:
        """`is_done` of one listing against the done rows that `taken` has not matched yet, which it takes."""
        if not taken.left:  # nothing (left) to skip: no path to resolve (every new input of a resume had been
            return False  # resolved, ~30 us a symlink)
        key = (band_key([file for _, file in bands], os.getcwd(), self._written, self._folders) if bands
               else path_key(path, os.getcwd(), self._written, self._folders))
        if self.done[key] <= taken.paths[key]:
            return False
        if ident:  # (a blank catalog id is no id: the file's stem was taken)
            listed = (key, listed_id(self._written(ident)))
            if self.done_by_id[listed] <= taken.ids[listed]:
                return False
            taken.ids[listed] += 1
        taken.paths[key] += 1
        taken.left -= 1
        return True


class _Taken:
    """The done rows one listing of the inputs has matched, by key and by (key, listed id), and how many
    are left: none left, nothing to resolve."""

    def __init__(self, left: int):
        self.paths: Counter[str] = Counter()
        self.ids: Counter[tuple[str, str]] = Counter()
        self.left = left
