"""Find the books under a dataset root, whatever public format they are in, and split them by book.

A root may be a Manga109 root (``books.txt`` + ``annotations/``), a CoMix root (``annotations/*.json``
+ ``images/``), an eBDtheque root (``GT/*.svg`` + ``Pages/``), a COMICS root (``raw_panel_images/``),
or a folder holding several of these as ``manga109/``, ``comix/``, ``ebdtheque/`` and ``comics/``
(the sample's layout, ``domainvlm sample-data comics``, uses all but ``ebdtheque/``).
Splits are whole books (``splits.json`` at the root, else a stable hash of the title), so no page of
a held-out book is ever seen in training.
"""

from __future__ import annotations

from pathlib import Path

from domainvlm.core.errors import DataRootError
from domainvlm.domains.comics.comics_folds import is_comics_root, read_comics_books
from domainvlm.domains.comics.comix import is_comix_root, read_comix
from domainvlm.domains.comics.ebdtheque import is_ebdtheque_root, read_ebdtheque
from domainvlm.domains.comics.manga109 import is_manga109_root, read_manga109
from domainvlm.domains.comics.pages import BadInput, Book, Direction, book_split, read_splits

PAGE_FORMATS = ("manga109", "comix", "ebdtheque")


def dataset_roots(root: Path) -> dict[str, Path]:
    """Format name → folder, for the root itself or its ``manga109/``, ``comix/``, ``ebdtheque/``,
    ``comics/``."""
    found = {}
    for name, test in (
        ("manga109", is_manga109_root),
        ("comix", is_comix_root),
        ("ebdtheque", is_ebdtheque_root),
        ("comics", is_comics_root),
    ):
        for candidate in (root / name, root):
            if candidate.is_dir() and test(candidate):
                found[name] = candidate
                break
    return found


def load_books(
    root: str | Path,
    split: str | None = None,
    directions: dict[str, Direction] | None = None,
    formats: tuple[str, ...] = PAGE_FORMATS,
    skip_bad: BadInput | None = None,
) -> list[Book]:
    """Books of ``root`` in the given formats (page-based ones by default), optionally one split.

    ``directions`` sets the reading direction per book title (default: right to left for Manga109,
    left to right for CoMix, eBDtheque and COMICS).
    """
    root = Path(root)
    roots = dataset_roots(root)
    if not any(name in roots for name in formats):
        raise DataRootError(
            f"{str(root)!r} holds no comics dataset in {', '.join(formats)} format: expected "
            "books.txt + annotations/ (Manga109), annotations/*.json + images/ (CoMix), GT/*.svg + "
            "Pages/ (eBDtheque) or raw_panel_images/ (COMICS), or such folders named manga109/, "
            "comix/, ebdtheque/, comics/. Write "
            "the offline sample with `domainvlm sample-data comics --out DIR`."
        )
    bad = skip_bad or BadInput()
    books: list[Book] = []
    if "manga109" in formats and "manga109" in roots:
        books += read_manga109(roots["manga109"], directions=directions, skip_bad=bad)
    if "comix" in formats and "comix" in roots:
        books += read_comix(roots["comix"], directions=directions, skip_bad=bad)
    if "ebdtheque" in formats and "ebdtheque" in roots:
        books += read_ebdtheque(roots["ebdtheque"], directions=directions, skip_bad=bad)
    if "comics" in formats and "comics" in roots:
        books += read_comics_books(roots["comics"])
    if split is not None:
        splits = read_splits(root)
        books = [book for book in books if book_split(book.title, splits) == split]
    return books
