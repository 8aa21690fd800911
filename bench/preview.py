"""Instant preview latency (CPU, no model): a cold 512 px preview against decoding the swatch alone.

Each figure is printed beside a baseline measured in the same run, as a ratio:
- cold preview p50 / p95      vs. decoding the same swatch bytes to RGB with Pillow (what any use of
                                the swatch costs at least), over ~50 distinct swatches: the catalog's
                                woven PNGs under other codes plus 1600x1200 photo-like JPEGs;
- cold preview, photos only   vs. decoding those photos;
- warm preview (cache hit)    vs. the same decode.
"Cold" means a swatch the renderer has never seen (no cached tile or preview); the cut templates are
prepared once beforehand, as they are after a service's first preview.

Budget (issue 13): cold p50 <= 50 ms at 512 px on the 2-core dev VM.

Run: `python bench/preview.py` (`--save /tmp/previews` also writes every catalog colour and two photo
swatches in both cuts, plus a contact sheet, for looking at). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

from PIL import Image

from catalog.data import load_catalog
from catalog.swatches import photo_swatch, render_swatch
from deployments.preview import CutTemplate, PreviewRenderer
from figures import measured_on, percentile


def swatches(woven: int, photos: int) -> list[tuple[str, bytes]]:
    """Distinct swatch bytes: catalog colours woven under new codes, and photo-like uploads."""
    colors = [c for f in load_catalog().families for c in f.colors]
    made = [("woven", render_swatch(colors[i % len(colors)].hex_value, f"{colors[i % len(colors)].swatch_code}-{i}"))
            for i in range(woven)]
    made += [("photo", photo_swatch(colors[i % len(colors)].hex_value, ("herringbone", "plaid")[i % 2], seed=i))
             for i in range(photos)]
    return made


def decode_alone(data: bytes) -> float:
    started = time.perf_counter()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB")
    return time.perf_counter() - started


def save_previews(folder: Path, renderer: PreviewRenderer, templates: dict[str, CutTemplate], size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shown = [(c.color_id, render_swatch(c.hex_value, c.swatch_code)) for f in load_catalog().families for c in f.colors]
    shown += [("photo-herringbone", photo_swatch("#8C8A88", "herringbone", seed=1)),
              ("photo-plaid", photo_swatch("#6E4B2F", "plaid", seed=2))]
    tiles = []
    for name, swatch in shown:
        if name.startswith("photo"):
            (folder / f"{name}-swatch.jpg").write_bytes(swatch)
        for cut, template in templates.items():
            path = folder / f"{name}-{cut}.jpg"
            path.write_bytes(renderer.render(swatch, template, size))
            tiles.append(path)
    columns, thumb = 6, 256
    sheet = Image.new("RGB", (columns * thumb, -(-len(tiles) // columns) * thumb), "white")
    for i, path in enumerate(tiles):
        with Image.open(path) as image:
            sheet.paste(image.resize((thumb, thumb), Image.LANCZOS), ((i % columns) * thumb, (i // columns) * thumb))
    sheet.save(folder / "sheet.jpg", quality=90)
    print(f"wrote {len(tiles)} previews and {folder / 'sheet.jpg'}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--woven", type=int, default=40, help="catalog-style PNG swatches")
    parser.add_argument("--photos", type=int, default=10, help="1600x1200 photo-like JPEG swatches")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--save", type=Path, help="also write previews and a contact sheet here")
    args = parser.parse_args()
    catalog = load_catalog()
    templates = {c.cut_id: CutTemplate(c.cut_id, c.regions_png(), c.shading_png()) for c in catalog.cuts}
    renderer = PreviewRenderer()
    prepare = []
    for template in templates.values():
        started = time.perf_counter()
        renderer.template(template, args.size)
        prepare.append(time.perf_counter() - started)

    samples = swatches(args.woven, args.photos)
    cuts = list(templates.values())
    decode, cold, warm, photo_decode, photo_cold = [], [], [], [], []
    for i, (kind, data) in enumerate(samples):
        template = cuts[i % len(cuts)]
        decoded = decode_alone(data)
        started = time.perf_counter()
        first = renderer.render(data, template, args.size)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert renderer.render(data, template, args.size) is first
        warm.append(time.perf_counter() - started)
        decode.append(decoded)
        if kind == "photo":
            photo_decode.append(decoded)
            photo_cold.append(cold[-1])
    assert renderer.tiles.cache_info().misses == len(samples) and renderer.previews.cache_info().hits == len(samples)

    ms = 1e3
    rows = [
        ("cold preview p50 (ms)", statistics.median(cold) * ms, statistics.median(decode) * ms, "decode swatch p50"),
        ("cold preview p95 (ms)", percentile(cold, 0.95) * ms, percentile(decode, 0.95) * ms, "decode swatch p95"),
        ("cold preview, 1600x1200 JPEG p50 (ms)", statistics.median(photo_cold) * ms,
         statistics.median(photo_decode) * ms, "decode that JPEG p50"),
        ("warm preview (cache hit) p50 (ms)", statistics.median(warm) * ms, statistics.median(decode) * ms,
         "decode swatch p50"),
    ]
    print(f"{len(samples)} distinct swatches ({args.woven} woven PNG, {args.photos} photo JPEG), {args.size} px, "
          f"templates prepared once in {max(prepare) * ms:.0f} ms")
    print(f"{'figure':40} {'ours':>9} {'baseline':>9} {'ratio':>7}  baseline is")
    for name, ours, base, what in rows:
        print(f"{name:40} {ours:9.2f} {base:9.2f} {ours / base:7.2f}  {what}")
    print(json.dumps({
        **measured_on(), "size": args.size,
        "swatches": {"woven": args.woven, "photo": args.photos}, "template_prepare_ms": round(max(prepare) * ms, 1),
        "figures": {name: {"ours": round(ours, 3), "baseline": round(base, 3), "ratio": round(ours / base, 2)}
                    for name, ours, base, _ in rows},
    }))
    if args.save:
        save_previews(args.save, renderer, templates, args.size)


if __name__ == "__main__":
    main()
