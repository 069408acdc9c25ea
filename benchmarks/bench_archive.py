"""What does the photo-archive pipeline cost beyond the model, is its memory flat, and does it resume?

``geolocate DIR --out results.parquet`` as a user runs it (a subprocess), on synthetic JPEGs
(640x480, camera-like noise, EXIF GPS on every other one) against a res-1 Flat index:

1. photos/s end to end with the tiny CLIP model on ``--photos`` photos (the pipeline's own cost:
   walking, reading, EXIF, decoding, search, rows, part files, assembly), beside the encoder alone
   on the same photos already decoded in memory, and the decoding alone (the thread pool);
2. the same with the ViT-L/14 shape (``ViT-L-14-random``: real compute, meaningless answers) on
   ``--large-photos`` photos: the real cost, and the share of it that is not the model;
3. RSS of the command after its first commit ("start") and at its end, and the peak;
4. a ``kill -9`` in the middle of a run and the same command again: every photo once.

Writes ``benchmarks/results/archive.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, ROOT, machine, save, table  # noqa: E402


def make_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n JPEGs of 640x480 with camera-like noise; every other one carries EXIF GPS."""
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((640, 480), Image.BICUBIC)
        noisy = np.clip(np.asarray(img, np.int16) + rng.integers(-12, 13, (480, 640, 3)), 0, 255).astype(np.uint8)
        exif = Image.Exif()
        if i % 2 == 0:
            lat, lng = rng.uniform(-60, 70), rng.uniform(-180, 180)
            exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (IFDRational(int(abs(lat) * 1e6), 1_000_000), 0, 0),
                            3: "E" if lng >= 0 else "W", 4: (IFDRational(int(abs(lng) * 1e6), 1_000_000), 0, 0)}
        path = folder / f"roll{i // 100:02d}" / f"IMG_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, "JPEG", quality=90, exif=exif.tobytes())
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def n_parts(out: Path) -> int:
    return len(list((out.parent / f".{out.name}.parts").glob("part-*.parquet")))


def locate_cmd(photos: Path, out: Path, index: Path, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geoindex", "locate", str(photos), "--out", str(out), "--index", str(index),
            "--clip-model", model, "--no-progress", *extra]


def run_sampled(cmd: list[str], out: Path, kill_after_parts: int | None = None) -> dict:
    """Run ``cmd``, sampling its RSS every 0.1 s; kill -9 it once ``kill_after_parts`` parts exist."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int, float]] = []  # (seconds, parts, MB)
    killed = threading.Event()

    def sample():
        while proc.poll() is None:
            mb, parts = rss_mb(proc.pid), n_parts(out)
            if mb is not None:
                samples.append((time.perf_counter() - t0, parts, mb))
            if kill_after_parts is not None and parts >= kill_after_parts and not killed.is_set():
                killed.set()
                proc.send_signal(signal.SIGKILL)
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    stdout, stderr = proc.communicate()
    thread.join()
    wall = time.perf_counter() - t0
    if not killed.is_set() and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr}")
    committed = [mb for _, parts, mb in samples if parts >= 1]
    return {"wall_s": wall, "summary": json.loads(stdout) if stdout.strip() else None, "killed": killed.is_set(),
            "rss_start_mb": round(committed[0], 1) if committed else None,
            "rss_end_mb": round(samples[-1][2], 1) if samples else None,
            "rss_peak_mb": round(max(s[2] for s in samples), 1) if samples else None}


def encoder_alone(model: str, paths: list[Path], batch: int) -> dict:
    """photos/s of CLIP + head on photos already decoded (and model-sized) in memory; and of the
    decoding alone on the pipeline's thread pool."""
    from geoindex.archive.pipeline import decode, decoded_batches, model_sized
    from geoindex.encoders.clip import load_image_encoder

    encoder = load_image_encoder(model, batch_size=batch)
    shrink = model_sized(encoder.preprocess)
    workers = min(8, os.cpu_count() or 1)
    t = time.perf_counter()
    images = [d.image for b in decoded_batches([str(p) for p in paths], lambda p: decode(p, shrink=shrink),
                                               batch, workers) for d in b]
    decode_s = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, len(images), batch):
        encoder.encode_images(images[start:start + batch])
    encode_s = time.perf_counter() - t
    return {"decode_photos_per_s": len(paths) / decode_s, "encoder_photos_per_s": len(paths) / encode_s}


def build_index() -> Path:
    idx = CACHE / "archive-idx-r1"
    if not (idx / "manifest.json").exists():
        from geoindex.cli.build import main as build

        CACHE.mkdir(parents=True, exist_ok=True)
        assert build(["--resolution", "1", "--out", str(idx), "--factory", "Flat", "--no-progress", "-q"]) == 0
    return idx


def measure(label: str, model: str, photos_dir: Path, paths: list[Path], index: Path, work: Path, batch: int,
            rounds: int = 1) -> dict:
    """The command end to end and the encoder alone, ``rounds`` times in alternating order (ABBA...),
    so a machine whose load drifts weighs on both alike; medians of each."""
    e2e_runs, alone_runs = [], []
    for r in range(rounds):
        for step in ("e2e", "alone") if r % 2 == 0 else ("alone", "e2e"):
            if step == "alone":
                alone_runs.append(encoder_alone(model, paths, batch))
                continue
            out = work / f"{label}-{r}.parquet"
            e2e_runs.append(run_sampled(locate_cmd(photos_dir, out, index, model, "--batch-size", str(batch),
                                                   "--commit-every", str(max(batch, len(paths) // 10))), out))
    n = e2e_runs[0]["summary"]["photos"]
    # photos/s once the index and the models are loaded (imports alone take 10-30 s here); the
    # command's whole time and the wall clock (Python's start too) are reported beside
    pps = float(np.median([e["summary"]["photos_per_s"] for e in e2e_runs]))
    enc = float(np.median([a["encoder_photos_per_s"] for a in alone_runs]))
    dec = float(np.median([a["decode_photos_per_s"] for a in alone_runs]))
    last = e2e_runs[-1]
    return {"run": label, "model": model, "photos": n, "rounds": rounds, "e2e_photos_per_s": round(pps, 2),
            "encoder_photos_per_s": round(enc, 2), "decode_photos_per_s": round(dec, 2),
            "e2e_over_encoder": round(pps / enc, 3),
            "e2e_over_encoder_each_round": [round(e["summary"]["photos_per_s"] / a["encoder_photos_per_s"], 3)
                                            for e, a in zip(e2e_runs, alone_runs)],
            "command_s": round(last["summary"]["seconds"], 1), "wall_s": round(last["wall_s"], 1),
            "rss_start_mb": last["rss_start_mb"], "rss_end_mb": last["rss_end_mb"], "rss_peak_mb": last["rss_peak_mb"]}


def kill_and_resume(photos_dir: Path, n: int, index: Path, work: Path) -> dict:
    import pyarrow.parquet as pq

    out = work / "killed.parquet"
    cmd = locate_cmd(photos_dir, out, index, "tiny-test", "--batch-size", "16", "--commit-every", "32")
    first = run_sampled(cmd, out, kill_after_parts=max(2, n // 64))
    parts = (out.parent / f".{out.name}.parts").glob("part-*.parquet")
    saved = sum(pq.read_metadata(p).num_rows for p in parts)
    second = run_sampled(cmd, out)
    paths = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    return {"killed": first["killed"], "rows_saved_before_kill": saved, "second_run_new": second["summary"]["new"],
            "rows": len(paths), "unique_paths": len(set(paths)), "photos": n,
            "ok": first["killed"] and len(paths) == len(set(paths)) == n and second["summary"]["new"] == n - saved}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--large-photos", type=int, default=50, help="photos for the ViT-L/14 shape (0: skip)")
    ap.add_argument("--index", type=Path, default=None, help="an index (default: a res-1 Flat one, built once)")
    ap.add_argument("--batch", type=int, default=8, help="photos per CLIP batch, both runs (default 8)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="end-to-end and encoder-alone runs per model, alternating order (default 2; medians)")
    ap.add_argument("--busy", action="store_true", help="label the numbers as measured on a shared, busy machine")
    args = ap.parse_args(argv)
    index = args.index or build_index()
    rows: list[dict] = []
    note = ("measured on a shared, busy machine (2 cores, other engineers' jobs running): the end-to-end run and "
            "the encoder alone ran in alternating order, medians of the rounds, yet their ratio still carries the load's "
            "drift") if args.busy else "quiet machine"
    result = {"machine": {**machine(), "load_average_at_start": os.getloadavg()}, "note": note, "batch": args.batch,
              "backend": "auto (ONNX Runtime fp32 on this CPU)", "runs": rows, "kill_and_resume": None,
              "index": str(index)}
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp:
        work = Path(tmp)
        paths = make_photos(work / "photos", args.photos)
        rows.append(measure("tiny", "tiny-test", work / "photos", paths, index, work, args.batch, args.rounds))
        save("archive.json", result)  # after each stage: a long run that stops keeps what it measured
        result["kill_and_resume"] = resume = kill_and_resume(work / "photos", args.photos, index, work)
        save("archive.json", result)
        if args.large_photos:
            large = make_photos(work / "large", args.large_photos, seed=1)
            rows.append(measure("vit-l-14", "ViT-L-14-random", work / "large", large, index, work, args.batch,
                                args.rounds))
    result["machine"]["load_average_at_end"] = os.getloadavg()
    print(table(rows, list(rows[0])))
    print("kill -9 and resume:", json.dumps(resume))
    print(f"-> {save('archive.json', result)}")
    return 0 if resume["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
