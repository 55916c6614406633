"""A knowledge base of a comics collection: its panels and its character crops.

Every record is an image (a ``page.jpg#xywh=`` crop, relative to the dataset root) carrying where
it lives: book, page, panel box and the panel's dialogue. ``kind=panel`` records are whole panels,
found by a text query through the joint space; ``kind=character`` records are character crops,
found by a character-crop image query because the system's character loss puts crops of one
character together, and each names the panel it comes from.
"""

from __future__ import annotations

from pathlib import Path

from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.pages import crop_address


def collection_records(root: Path, split: str | None = None) -> list[dict]:
    root = Path(root).resolve()
    records = []
    for book in load_books(root, split):
        for page, panel in book.panels():
            image = page.image.resolve().relative_to(root)
            where = {
                "book": book.title,
                "page": page.index,
                "panel_box": [round(v) for v in panel.box],
                "dialogue": panel.dialogue,
            }
            records.append({"image": crop_address(image, panel.box), "kind": "panel", **where})
            for person in panel.characters:
                if person.part != "body" and any(p.part == "body" for p in panel.characters):
                    continue
                name = book.characters.get(person.character) or person.character
                records.append(
                    {
                        "image": crop_address(image, person.box),
                        "kind": "character",
                        "character": name,
                        **where,
                    }
                )
    return records
