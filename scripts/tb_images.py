"""Export the images a run logged to TensorBoard (sample grids, 2D scatter plots) as PNG files.

    python -m scripts.tb_images <run folder>                                 # every image tag, every step
    python -m scripts.tb_images <run folder> --tag samples/generated --steps 0 2000 --out figures/

Files are named ``<tag with / as _>_step<step>.png`` and written into ``--out`` (default: the run
folder's ``images/``); their paths are printed. TensorBoard stores the PNG bytes themselves, so the
files are exactly what the *Images* tab shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

from gan.runfolder import TB, tb_dir


def logged_images(run_dir: Path) -> dict[str, dict[int, bytes]]:
    """``{tag: {step: PNG bytes}}`` for every image in the run's ``tb/`` events (all of them kept)."""
    events = EventAccumulator(str(tb_dir(run_dir)), size_guidance={IMAGES: 0})
    events.Reload()
    return {
        tag: {event.step: event.encoded_image_string for event in events.Images(tag)}
        for tag in events.Tags()[IMAGES]
    }


def export(run_dir: Path, out: Path, *, tags=None, steps=None) -> list[Path]:
    images = logged_images(run_dir)
    missing = sorted(set(tags or ()) - images.keys())
    if missing:
        raise ValueError(f"no images under tag(s) {', '.join(missing)}; logged: {', '.join(sorted(images))}")
    written = []
    for tag in tags or sorted(images):
        for step, png in sorted(images[tag].items()):
            if steps is None or step in steps:
                path = out / f"{tag.replace('/', '_')}_step{step}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
                written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a run folder (with tb/)")
    parser.add_argument("--tag", action="append", help="image tag, e.g. samples/generated (repeatable)")
    parser.add_argument("--steps", type=int, nargs="+", help="only these steps")
    parser.add_argument("--out", type=Path, help="output folder (default <run>/images)")
    args = parser.parse_args(argv)
    if not (args.run / TB).is_dir():
        print(f"error: {args.run} has no tb/ folder (not a run folder?)", file=sys.stderr)
        return 2
    try:
        written = export(args.run, args.out or args.run / "images", tags=args.tag, steps=args.steps)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
