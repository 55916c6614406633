"""Character-crop queries for a comics knowledge base: one crop per character of the held-out books.

    python -m domainvlm.domains.comics.character_queries ROOT [--split test]

prints ``name<TAB>page.jpg#xywh=...`` lines; an address goes to ``kb search --image`` as is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.pages import crop_address


def character_queries(root: Path, split: str = "test") -> list[tuple[str, str]]:
    """(character name, crop address) for each character's first body crop in ``split``'s books:
    ready-made image queries for ``kb search --image``."""
    seen: dict[str, str] = {}
    for book in load_books(root, split):
        for page, panel in book.panels():
            for person in panel.characters:
                name = book.characters.get(person.character) or person.character
                if person.part == "body" and name not in seen:
                    seen[name] = crop_address(page.image, person.box)
    return list(seen.items())


def main(argv: list[str] | None = None) -> int:
    """One line per character: its name and a crop address."""
    parser = argparse.ArgumentParser(description="print a character-crop query per character")
    parser.add_argument("root", type=Path)
    parser.add_argument("--split", default="test")
    args = parser.parse_args(argv)
    for name, address in character_queries(args.root, args.split):
        print(f"{name}\t{address}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
