"""pixmesh's pipeline vs libvips in process, side by side on the same images and operations.

Run through bench/run, which installs pyvips (with its bundled libvips), Pillow and numpy into a
venv and builds `pixmesh-bench` in release mode.

For each test image and output format: CPU ms per image (median of --rounds rounds, pixmesh and
libvips taking turns, each the median of --repeat runs after a warm-up; process CPU time, so
threads count), output bytes, and SSIM (8x8 blocks, luma, transparency shown over white) of each output
against a neutral reference: Pillow's Lanczos downscale of the full-size decode to the same size.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # one image per core, as pixmesh runs

import numpy as np  # noqa: E402
import pyvips  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from machine import describe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "testdata" / "images"
BOX = 800
QUALITY = 80
FORMATS = {"jpeg": ".jpg", "webp": ".webp"}


def cpu_ms(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def pixmesh(bench, fmt, images, repeat, out_dir, allocator="sidecar"):
    cmd = [bench, "--size", f"{BOX}x{BOX}", "--fit", "fit-in", "--format", fmt,
           "--quality", str(QUALITY), "--repeat", str(repeat), "--out", str(out_dir),
           "--allocator", allocator]
    lines = subprocess.run(cmd + [str(p) for p in images], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    return {r["image"]: r for r in map(json.loads, lines)}


def vips(path, fmt, repeat):
    pyvips.cache_set_max(0)
    data = path.read_bytes()
    suffix = FORMATS[fmt]

    def render():
        image = pyvips.Image.thumbnail_buffer(data, BOX, height=BOX, size="down")
        if image.hasalpha() and fmt == "jpeg":
            image = image.flatten(background=[255, 255, 255])
        return image.write_to_buffer(suffix, Q=QUALITY)

    return cpu_ms(render, repeat), render()


def on_white(image):
    """RGB, with any transparency composited over white, as it would show on a page."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return image.convert("RGB")


def luma(image):
    rgb = np.asarray(on_white(image), dtype=np.float64)
    return rgb @ np.array([0.299, 0.587, 0.114])


def ssim(a, b):
    h, w = (min(a.shape[0], b.shape[0]) // 8) * 8, (min(a.shape[1], b.shape[1]) // 8) * 8
    blocks = lambda x: x[:h, :w].reshape(h // 8, 8, w // 8, 8)  # noqa: E731
    a, b = blocks(a), blocks(b)
    mu_a, mu_b = a.mean(axis=(1, 3)), b.mean(axis=(1, 3))
    var_a, var_b = a.var(axis=(1, 3)), b.var(axis=(1, 3))
    cov = ((a - mu_a[:, None, :, None]) * (b - mu_b[:, None, :, None])).mean(axis=(1, 3))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def reference(path, size):
    with Image.open(path) as src:
        src = ImageOps.exif_transpose(src)
        return luma(on_white(src).resize(size, Image.LANCZOS))


def quality(path, encoded):
    with Image.open(encoded) as out:
        out.load()
        return ssim(reference(path, out.size), luma(out))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bench", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = sorted(p for p in IMAGES.iterdir() if p.suffix in (".jpg", ".png", ".webp"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for fmt in FORMATS:
            for path in images:
                # pixmesh and libvips take turns, so a slower minute on a shared machine
                # weighs on both sides alike.
                ours, glibc, theirs = [], [], []
                for _ in range(args.rounds):
                    r = pixmesh(args.bench, fmt, [path], args.repeat, tmp)[path.name]
                    ours.append(r["cpu_ms"])
                    g = pixmesh(args.bench, fmt, [path], args.repeat, tmp, "glibc")[path.name]
                    glibc.append(g["cpu_ms"])
                    ms, vips_bytes = vips(path, fmt, args.repeat)
                    theirs.append(ms)
                ms = statistics.median(theirs)
                vips_file = tmp / f"{path.name}.vips.{fmt}"
                vips_file.write_bytes(vips_bytes)
                rows.append({
                    "image": path.name, "format": fmt,
                    "pixmesh_ms": statistics.median(ours), "vips_ms": ms,
                    "glibc_ms": statistics.median(glibc),
                    "pixmesh_kb": r["bytes"] / 1024, "vips_kb": len(vips_bytes) / 1024,
                    "pixmesh_ssim": quality(path, tmp / f"{path.name}.{fmt}"),
                    "vips_ssim": quality(path, vips_file),
                })
                print(f"{path.name} → {fmt}: pixmesh {statistics.median(ours):.1f} ms, "
                      f"libvips {ms:.1f} ms", file=sys.stderr)
    table = [
        f"# pixmesh pipeline vs libvips ({time.strftime('%Y-%m-%d')})",
        "",
        f"Fit into {BOX}x{BOX} (no enlarging), quality {QUALITY}; CPU ms per image, median of "
        f"{args.rounds} rounds of {args.repeat} runs each after a warm-up, pixmesh and libvips "
        "taking turns. libvips {pyvips.version(0)}.{pyvips.version(1)}."
        f"{pyvips.version(2)} in process via pyvips `thumbnail_buffer`, VIPS_CONCURRENCY=1. "
        f"{describe()}. SSIM: luma, 8x8 blocks, against Pillow's Lanczos "
        "downscale of the full decode (1.0 = identical). pixmesh runs with the sidecar's "
        "allocator settings (every buffer of 1 MiB or more mapped and unmapped on its own, so "
        "resident memory follows the memory budget); the glibc column leaves glibc's defaults, "
        "which keep freed buffers for the next render. Regenerate with `bench/run`.",
        "",
        "| image | format | pixmesh ms | libvips ms | ratio | pixmesh, glibc defaults ms "
        "| ratio | pixmesh KB | libvips KB | pixmesh SSIM | libvips SSIM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['image']} | {r['format']} | {r['pixmesh_ms']:.1f} | {r['vips_ms']:.1f} "
            f"| {r['pixmesh_ms'] / r['vips_ms']:.2f}× | {r['glibc_ms']:.1f} "
            f"| {r['glibc_ms'] / r['vips_ms']:.2f}× | {r['pixmesh_kb']:.1f} | {r['vips_kb']:.1f} "
            f"| {r['pixmesh_ssim']:.4f} | {r['vips_ssim']:.4f} |")
    text = "\n".join(table) + "\n"
    (ROOT / "bench" / "RESULTS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
