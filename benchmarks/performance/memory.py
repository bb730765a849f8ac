"""Peak memory of `medxgan explain` on 100 and on 1,000 image files: it must stay flat (the files are
streamed in batches and every explanation is written as soon as it is done).

    python benchmarks/performance/memory.py --gan RUN --images FOLDER [--counts 100 1000]

Each count runs the CLI in its own child process; the peak resident set size is that child's
`ru_maxrss` (read by a small wrapper process that runs nothing else), and the GPU peak is the one
`explain` records in summary.json when it ran on CUDA. FOLDER needs at least max(counts) image files
(e.g. `medxgan synth brain-mri --n 1500 --out D` and FOLDER = D/train).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

from medxgan.data import collect_image_files  # noqa: E402

WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(rc)\n"
)


def run_one(gan: str, files: list[Path], workdir: Path, device: str, batch: int) -> dict:
    src = workdir / f"in_{len(files)}"
    src.mkdir()
    for i, f in enumerate(files):  # symlinks: the same pixels, no copies
        (src / f"{i:05d}{f.suffix}").symlink_to(f.resolve())
    out = workdir / f"out_{len(files)}"
    cmd = [sys.executable, "-m", "medxgan", "explain", str(src), "--gan", gan, "--out", str(out), "--device", device,
           "--batch-size", str(batch)]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"explain failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss_kb = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("MAXRSS_KB")))
    summary = json.loads((out / "summary.json").read_text())
    written = sum(1 for _ in out.glob("*/explanation.json"))
    return {"n_images": len(files), "written": written, "peak_rss_mb": rss_kb / 1024, "seconds": secs,
            "seconds_per_image": secs / len(files), "peak_gpu_memory_mb": summary.get("peak_gpu_memory_mb"),
            "inversion": summary.get("inversion")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gan", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    files = collect_image_files([args.images])
    if len(files) < max(args.counts):
        raise SystemExit(f"{args.images}: {len(files)} image files, need {max(args.counts)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="medxgan-mem-") as tmp:
        for n in args.counts:
            rows.append(run_one(args.gan, files[:n], Path(tmp), args.device, args.batch))
            r = rows[-1]
            print(f"{n:5d} images: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.0f} s ({r['seconds_per_image']:.3f} s/image)"
                  + (f", GPU peak {r['peak_gpu_memory_mb']} MB" if r["peak_gpu_memory_mb"] else ""), flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS ratio {rows[-1]['n_images']} / {rows[0]['n_images']} images: {ratio:.3f}")
    print(write_result("memory", {"machine": machine(), "device": args.device, "gan": args.gan, "results": rows,
                                  "rss_ratio_largest_over_smallest": ratio}, args.out and Path(args.out)))


if __name__ == "__main__":
    main()
