"""`python3 -m ais_bench` double: the real tool's options, input batching (natural order, the
last batch padded), output naming, timestamped output folder, printed summary and summary
JSON, and its multi-device mode (`--device 0,1`: each device's summary, then the per-device
lines and `summary throughput`, per-device folders `<ts>/device<N>_<i>/`); the model inside the
double .om runs on onnxruntime.

Like the CANN runtime, it numbers the chips it can see 0 .. count-1 (with
PCB_DOUBLE_CHECK_DEVICES=1 the chips are the /dev/davinci<N> nodes present). Other versions:
AIS_BENCH_DOUBLE_LEGACY=1 takes the options of an ais_infer of 2022-09 (no --warmup_count,
--display_all_summary, one device), =2022-11 those of an ais_bench before --divide_input (one
device per process); PCB_DOUBLE_CHIPS=N makes it see N chips; AIS_BENCH_DOUBLE_SUMMARY=inside
writes ais_infer's `sumary.json` inside the output folder and prints its 2022-06 throughput
line; =none writes no summary JSON."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

OM_MAGIC = b"PCB-DOUBLE-OM\n"
PADDING = "padding_infer_fake_file"
SCALE = 99


def log(message: str) -> None:
    print(f"[INFO] {message}", flush=True)


def error(message: str) -> int:
    print(f"[ERROR] {message}", flush=True)
    return 1


def natural_sort(names: list[str]) -> list[str]:
    def key(text: str) -> list:
        return [int(c) if c.isdigit() else c.lower() for c in re.split("([0-9]+)", text)]

    return sorted(sorted(names), key=key)


def load_om(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    if not data.startswith(OM_MAGIC):
        raise SystemExit(error(f"load model {path} failed: not an om of the atc double"))
    header, _, onnx = data[len(OM_MAGIC) :].partition(b"\n")
    return json.loads(header), onnx


def stats(values: list[float]) -> dict:
    if not values:
        return {
            "min": 0.0,
            "max": 0.0,
            "mean": 0.0,
            "median": 0.0,
            f"percentile({SCALE}%)": 0.0,
            "count": 0,
        }
    array = np.asarray(values)
    return {
        "min": float(array.min()),
        "max": float(array.max()),
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        f"percentile({SCALE}%)": float(np.percentile(array, SCALE)),
        "count": len(values),
    }


def line(name: str, s: dict) -> str:
    return (
        f"{name} (ms): min = {s['min']}, max = {s['max']}, mean = {s['mean']}, median = "
        f"{s['median']}, percentile({SCALE}%) = {s[f'percentile({SCALE}%)']}"
    )


def main() -> int:
    # "1": ais_infer of 2022-09; "2022-11": ais_bench before --divide_input (one device).
    era = os.environ.get("AIS_BENCH_DOUBLE_LEGACY", "")
    legacy = era == "1"
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", "-m", required=True)
    parser.add_argument("--input", "-i", default=None)
    parser.add_argument("--output", "-o", default=None)
    parser.add_argument("--output_dirname", default=None)
    parser.add_argument("--outfmt", default="BIN", choices=["NPY", "BIN", "TXT"])
    parser.add_argument("--loop", "-l", type=int, default=1)
    parser.add_argument("--device", "-d", default="0", type=int if era else str)
    parser.add_argument("--dymBatch", type=int, default=0)
    parser.add_argument("--batchsize", type=int, default=None)
    if not legacy:
        parser.add_argument("--warmup_count", type=int, default=1)
        parser.add_argument("--display_all_summary", default="False")
    if not era:
        parser.add_argument("--divide_input", default="False")
        parser.add_argument("--pipeline", default="False")
        parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if legacy:
        args.warmup_count, args.display_all_summary = 1, "True"
    devices = [int(d) for d in str(args.device).split(",")]
    if len(devices) > 1:
        return multidevice(args, devices)
    return run(args, devices[0])


def visible_chips() -> int | None:
    """How many chips this process sees, when the double checks devices."""
    if os.environ.get("PCB_DOUBLE_CHIPS"):
        return int(os.environ["PCB_DOUBLE_CHIPS"])
    if os.environ.get("PCB_DOUBLE_CHECK_DEVICES") != "1":
        return None
    return len([p for p in Path("/dev").glob("davinci*") if p.name[len("davinci") :].isdigit()])


def multidevice(args: argparse.Namespace, devices: list[int]) -> int:
    log(f"multidevice:{devices} run begin")
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    results = []
    for index, device in enumerate(devices):
        one = argparse.Namespace(**vars(args))
        if args.output is not None:
            one.output_dirname = os.path.join(
                args.output_dirname or stamp, f"device{device}_{index}"
            )
        start = time.time()
        code, throughput = run(one, device, report=True)
        if code != 0:
            return code
        results.append((index, device, throughput, start, time.time()))
    log(f"multidevice run end qsize:{2 * len(devices)} result:0")
    for index, device, throughput, start, end in results:
        # The real tool's f-string is continued with a backslash: spaces before start_time.
        gap = " " * 17
        timing = f"start_time:{start} end_time:{end}"
        log(f"i:{index} device_{device} throughput:{throughput}{gap}{timing}")
    log(f"summary throughput:{sum(r[2] for r in results)}")
    return 0


def run(args: argparse.Namespace, device: int, report: bool = False):
    def done(code: int, throughput: float = 0.0):
        return (code, throughput) if report else code

    log("acl init success")
    chips = visible_chips()
    if chips is not None and not 0 <= device < chips:
        return done(error(f"open device {device} failed"))
    log(f"open device {device} success")
    header, onnx = load_om(Path(args.model))
    log(f"load model {args.model} success")
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    dims = [int(v) for v in header["input_shape"].split(":", 1)[1].split(",")]
    if dims[0] == -1:
        gears = [int(g) for g in (header.get("dynamic_batch_size") or "").split(",") if g]
        if args.dymBatch not in gears:
            return done(error(f"dymBatch {args.dymBatch} is not one of the model's gears {gears}"))
        dims[0] = args.dymBatch
    batch = dims[0]
    tensor_bytes = int(np.prod(dims)) * 4
    batchsize = args.batchsize if args.batchsize is not None else batch
    if args.batchsize is None:
        log(f"try get model batchsize:{batch}")

    output_prefix = None
    if args.output is not None:
        name = args.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")
        output_prefix = Path(args.output) / name
        output_prefix.mkdir(parents=True, exist_ok=True)
        log(f"output path:{output_prefix}")

    if args.input is None:
        batches = [["pure_infer_data"]]
        files_per_batch = 1
    else:
        folder = Path(args.input)
        files = natural_sort([str(p) for p in folder.iterdir() if p.suffix.lower() == ".bin"])
        if not files:
            return done(error(f"{folder} of input args not find valid file"))
        file_bytes = os.path.getsize(files[0])
        if file_bytes == 0 or tensor_bytes % file_bytes != 0:
            return done(error(f"arg0 tensorsize: {tensor_bytes} filesize: {file_bytes} not match"))
        files_per_batch = tensor_bytes // file_bytes
        batches = [files[i : i + files_per_batch] for i in range(0, len(files), files_per_batch)]
        batches[-1] += [PADDING] * (files_per_batch - len(batches[-1]))
        log(
            f"get filesperbatch files0 size:{file_bytes} tensor0size:{tensor_bytes} "
            f"filesperbatch:{files_per_batch} runcount:{len(batches)}"
        )
    log(f"warm up {args.warmup_count} done")

    per_batch = os.environ.get("AIS_BENCH_DOUBLE_PER_BATCH") == "1"
    compute, h2d, d2h = [], [], []
    for index, infiles in enumerate(batches):
        if infiles == ["pure_infer_data"]:
            data = np.zeros(dims, dtype=np.float32)
        else:
            real = [infiles[0] if f == PADDING else f for f in infiles]
            data = np.concatenate([np.fromfile(f, dtype=np.float32) for f in real]).reshape(dims)
        out = session.run(None, {input_name: data})[0]
        # An NPU computes in float16: the features it returns carry that rounding.
        out = out.astype(np.float16).astype(np.float32)
        for loop in range(args.loop):
            compute.append(0.5 + 0.25 * batch + 0.01 * ((index + loop) % 3))
            h2d.append(0.1 * batch + 0.05)
            d2h.append(0.02 * batch + 0.03)
        if output_prefix is None:
            continue
        if per_batch or infiles == ["pure_infer_data"]:
            stem = os.path.basename(infiles[0]).split(".")[0]
            out.tofile(output_prefix / f"{stem}_0.{args.outfmt.lower()}")
            continue
        for part, file in zip(np.array_split(out, files_per_batch, axis=0), infiles):
            if file == PADDING:
                continue
            stem = os.path.basename(file).split(".")[0]
            part.tofile(output_prefix / f"{stem}_0.{args.outfmt.lower()}")

    npu, h2d_s, d2h_s = stats(compute), stats(h2d), stats(d2h)
    throughput = 1000 * batchsize / npu["mean"] if npu["mean"] else 0
    log("-----------------Performance Summary------------------")
    show_all = args.display_all_summary.lower() in ("true", "1", "yes")
    if show_all:
        log(line("H2D_latency", h2d_s))
    log(line("NPU_compute_time", npu))
    if show_all:
        log(line("D2H_latency", d2h_s))
    inside = os.environ.get("AIS_BENCH_DOUBLE_SUMMARY") == "inside"
    if inside:
        log(f"throughput (1000*batchsize/NPU_compute_time): {throughput}")
    else:
        log(
            f"throughput 1000*batchsize.mean({batchsize})/NPU_compute_time.mean({npu['mean']}): "
            f"{throughput}"
        )
    log("------------------------------------------------------")
    if output_prefix is not None and os.environ.get("AIS_BENCH_DOUBLE_SUMMARY") != "none":
        summary = {
            "filesinfo": {},
            "NPU_compute_time": npu,
            "H2D_latency": h2d_s,
            "D2H_latency": d2h_s,
            "throughput": throughput,
            "npu_compute_time_list": compute,
            "pid": os.getpid(),
            "args": sys.argv,
        }
        where = output_prefix / "sumary.json" if inside else f"{output_prefix}_summary.json"
        with open(where, "w") as handle:
            json.dump(summary, handle)
    log(f"end to reset device is {device}")
    return done(0, throughput)


if __name__ == "__main__":
    sys.exit(main())
