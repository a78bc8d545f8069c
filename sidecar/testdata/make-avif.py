"""Writes the AVIF test images of sidecar/src/pipeline/avif.rs (libaom through libheif, as
libvips encodes them: an encoder other than pixmesh's own rav1e). Run with the bench venv:
    ~/.cache/pixmesh/bench-venv/bin/python sidecar/testdata/make-avif.py
"""
import pathlib

import pyvips

OUT = pathlib.Path(__file__).parent

# Four 16x32 bars: red, green, blue, white.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
bars = None
for rgb in COLOURS:
    bar = (pyvips.Image.black(16, 32) + list(rgb)).cast("uchar").copy(interpretation="srgb")
    bars = bar if bars is None else bars.join(bar, "horizontal")

# 4:2:0, 8 bits, limited range (libheif's default for lossy).
bars.heifsave(str(OUT / "bars-420.avif"), compression="av1", Q=90, subsample_mode="on", bitdepth=8)
# 4:4:4 (10-bit AVIFs come from rav1e, in the tests themselves: this libaom build has no 10 bits).
bars.heifsave(str(OUT / "bars-444.avif"), compression="av1", Q=90, subsample_mode="off", bitdepth=8)
# Alpha: the left half opaque, the right half transparent.
alpha = (pyvips.Image.black(32, 32) + 255).join(pyvips.Image.black(32, 32), "horizontal").cast("uchar")
bars.bandjoin(alpha).heifsave(str(OUT / "bars-alpha.avif"), compression="av1", Q=90, bitdepth=8)
# EXIF orientation 6 (the stored pixels are shown turned 90° clockwise): written as irot.
turned = bars.copy()
turned.set_type(pyvips.GValue.gint_type, "orientation", 6)
turned.heifsave(str(OUT / "bars-irot.avif"), compression="av1", Q=90, bitdepth=8)
