"""Build resources/Khala.icns from resources/icon.png (Pillow resizes; the container is ours).

An .icns file is the magic b"icns", a big-endian uint32 total length, then chunks of
(4-byte type, uint32 length including this 8-byte header, data). Types ic07…ic14 hold
PNG data, which every macOS we support (12.3+) reads. Works on Linux too.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# type → pixel size; the @2x types repeat sizes on purpose (Finder picks by type).
ICNS_TYPES: dict[str, int] = {
    "ic11": 32,    # 16 @2x
    "ic12": 64,    # 32 @2x
    "ic07": 128,
    "ic13": 256,   # 128 @2x
    "ic08": 256,
    "ic14": 512,   # 256 @2x
    "ic09": 512,
    "ic10": 1024,  # 512 @2x
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pack_icns(chunks: dict[str, bytes]) -> bytes:
    body = b"".join(kind.encode("ascii") + struct.pack(">I", 8 + len(data)) + data
                    for kind, data in chunks.items())
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def png_size(data: bytes) -> tuple[int, int]:
    if data[:8] != PNG_MAGIC or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def render_pngs(source: Path) -> dict[str, bytes]:
    from PIL import Image  # build-time only

    with Image.open(source) as image:
        image = image.convert("RGBA")
        if image.size != (1024, 1024):
            raise ValueError(f"{source} is {image.size[0]}×{image.size[1]}; the icon source must be 1024×1024")
        rendered: dict[int, bytes] = {}
        for px in sorted(set(ICNS_TYPES.values())):
            buf = io.BytesIO()
            image.resize((px, px), Image.LANCZOS).save(buf, format="PNG", optimize=True)
            rendered[px] = buf.getvalue()
    return {kind: rendered[px] for kind, px in ICNS_TYPES.items()}


def build(source: Path, out: Path) -> int:
    data = pack_icns(render_pngs(source))
    out.write_bytes(data)
    return len(data)


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else ROOT / "resources" / "icon.png"
    out = Path(argv[2]) if len(argv) > 2 else ROOT / "resources" / "Khala.icns"
    print(f"wrote {out} ({build(source, out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
