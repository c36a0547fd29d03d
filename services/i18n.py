"""Gettext catalogues from ``.po`` files, compiled in memory (no build step): the console's pages and the
notification e-mails translate with them."""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations


def catalogue(folder: Path, locale: str) -> NullTranslations:
    """Every translated, non-fuzzy message of the ``.po`` files in ``folder`` (``<locale>/LC_MESSAGES``),
    merged into one catalogue; with no such folder, the messages themselves."""
    if not folder.is_dir():
        return NullTranslations()
    merged = Catalog(locale=locale)
    for po in sorted(folder.glob("*.po")):
        with po.open("rb") as source:
            for message in read_po(source, locale=locale):
                if message.id and message.string and not message.fuzzy:
                    merged.add(message.id, message.string)
    compiled = io.BytesIO()
    write_mo(compiled, merged)
    compiled.seek(0)
    return Translations(fp=compiled)
