"""Catalog file, sample swatches, prompts and loading into the database."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from catalog.data import load_catalog, parse_catalog
from catalog.loader import sync_catalog
from db.fabrics import active_families, find_active_color
from catalog.prompts import build_prompt
from catalog.swatches import render_swatch, swatch_key
from db.models import Color, FabricFamily


def test_shipped_catalog_has_three_families_of_four_colors_and_two_cuts():
    data = load_catalog()
    assert len(data.families) >= 3
    assert all(len(f.colors) >= 4 for f in data.families)
    assert {c.cut_id for c in data.cuts} >= {"recto", "cruzado"}
    for cut in data.cuts:
        with Image.open(io.BytesIO(cut.template_png())) as template:
            assert template.size == (512, 512)


def test_a_cut_template_is_read_and_hashed_once_per_process():
    import hashlib

    cut = load_catalog().cut("recto")
    assert cut.template_png() is cut.template_png()  # the same bytes object: not read again
    assert cut.template_digest == hashlib.sha256(cut.template_png()).hexdigest()
    assert cut.template_digest != load_catalog().cut("cruzado").template_digest


def test_parse_rejects_bad_hex_and_duplicates():
    raw = {"collection": "C", "cuts": [], "families": [
        {"family_id": "a", "display_name": "A", "fabric": "wool",
         "colors": [{"color_id": "x", "name": "X", "english": "x", "hex_value": "#12345", "swatch_code": "1"}]}]}
    with pytest.raises(ValueError, match="#RRGGBB"):
        parse_catalog(raw)
    raw["families"][0]["colors"][0]["hex_value"] = "#123456"
    raw["families"].append(dict(raw["families"][0]))
    with pytest.raises(ValueError, match="duplicate family"):
        parse_catalog(raw)


def test_swatch_is_deterministic_and_in_the_color():
    a = render_swatch("#6E4B2F", "330W-0501")
    assert a == render_swatch("#6E4B2F", "330W-0501")
    assert a != render_swatch("#6E4B2F", "330W-0512")
    with Image.open(io.BytesIO(a)) as image:
        mean = np.asarray(image.convert("RGB")).reshape(-1, 3).mean(axis=0)
    for got, want in zip(mean, (0x6E, 0x4B, 0x2F)):
        assert abs(got - want) < 20
    assert swatch_key("SASTRE 2026-27", "330W-0501") == "SASTRE 2026-27/330W-0501.png"


def test_prompt_names_cut_fabric_and_color():
    cut = load_catalog().cut("cruzado")
    prompt = build_prompt(cut.prompt, "Donegal tweed", "burgundy")
    assert prompt.startswith("burgundy Donegal tweed double-breasted six-button suit jacket")
    # What distinguishes requests fits in the first 77 characters, so even a byte-level tokenizer sees it.
    assert "double-breasted" in prompt[:77]


def test_sync_is_idempotent_and_keeps_admin_edits(sessions):
    data = load_catalog()
    total_colors = sum(len(f.colors) for f in data.families)
    with sessions.begin() as s:
        first = sync_catalog(s, data)
    assert (first.families_added, first.colors_added) == (len(data.families), total_colors)
    with sessions.begin() as s:
        s.scalars(select(FabricFamily).where(FabricFamily.family_id == "lino")).one().status = "inactive"
    with sessions.begin() as s:
        second = sync_catalog(s, data)
    assert (second.families_added, second.colors_added) == (0, 0)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Color)) == total_colors
        assert "lino" not in [f.family_id for f in active_families(s)]
        assert find_active_color(s, "lino", "lino-arena") == (None, None)
        family, color = find_active_color(s, "tweed", "tweed-burdeos")
        assert (family.family_id, color.hex_value) == ("tweed", "#5E2430")
        assert find_active_color(s, "tweed", "lino-arena")[1] is None  # color of another family
