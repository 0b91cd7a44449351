"""How far the released models' input moves when their frame goes through SSPL's 256 x 256 square (the gap that
``sspl prepare --native-frames`` closes; docs/data.md).

The middle frame of a video is given to the released models' test transform (``Resize((224, 224))``, bicubic,
ImageNet normalisation) three ways: as decoded (their input), through the 256 x 256 bicubic resize of
``frames/<id>.jpg`` before JPEG, and through that file's JPEG (quality 95, as ``sspl prepare`` writes it).
Prints the mean and largest absolute differences to their input, in ImageNet-normalised units.

    python bench/native_frame_gap.py tests/data/localize/demo__multiple__6DR8dA9TDOc1.mp4
"""

from __future__ import annotations

import argparse
import io
import json

from PIL import Image

from sspl.data.extract import FRAME_SIZE, JPEG_QUALITY
from sspl.data.transforms import build_eval_transform
from sspl.data.video import decode_frame_at, video_info


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video")
    args = parser.parse_args()
    frame, _ = decode_frame_at(args.video, video_info(args.video).duration / 2)
    frame = frame.convert("RGB")
    square = frame.resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    square.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    jpeg = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    test = build_eval_transform(mode="resize")
    theirs = test(frame)
    gaps = {}
    for name, image in (("256 x 256, before JPEG", square), ("256 x 256 JPEG q95", jpeg)):
        diff = (test(image) - theirs).abs()
        gaps[name] = {"mean": round(float(diff.mean()), 4), "max": round(float(diff.max()), 3)}
    print(json.dumps({"video": args.video, "frame": list(frame.size), "gap": gaps}, indent=1))


if __name__ == "__main__":
    main()
