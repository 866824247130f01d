"""Test double of atc and aoe (see ../README.md): the real tools' options, checks, verdict lines
and log location; the .om it writes is a header line plus the ONNX model, which the ais_bench
double runs."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

OM_MAGIC = b"PCB-DOUBLE-OM\n"
SOCS = {f"Ascend{c}" for c in ("310", "310B1", "310B2", "310B3", "310B4", "310P1", "310P3")}
MESSAGES = {
    "E10016": "Opname [{name}] specified in [--input_shape] is not found in the model",
    "E19010": "No parser is registered for Op [Div_23, optype [ai.onnx::23::Div]].",
    "E10001": "Value [{value}] for parameter [{name}] is invalid.",
    "E10007": "[{name}] is required.",
}
FAILED = "ATC run failed, Please check the detail log, Try 'atc --help' for more information"


def fail(code: str, **fields: str) -> int:
    print(FAILED)
    stamp = time.strftime("%Y-%m-%d-%H:%M:%S") + ".000.000"
    print(f"{code}: [PID: {os.getpid()}] {stamp} {MESSAGES[code].format(**fields)}")
    print("        Solution: Check the parameter and try again.")
    print("        TraceBack (most recent call last):")
    return 1


def options(argv: list[str]) -> dict[str, str]:
    found = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            found[key] = value
    return found


def model_inputs(model: Path) -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:  # a python without onnxruntime: the name is not checked
        return None
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return [i.name for i in session.get_inputs()]


def write_log(text: str) -> None:
    root = os.environ.get("ASCEND_PROCESS_LOG_PATH") or os.path.expanduser("~/ascend/log")
    folder = Path(root) / "debug" / "plog"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"plog-{os.getpid()}.log").write_text(text + "\n")


def main(tool: str, argv: list[str]) -> int:
    print(f"{tool.upper()} start working now, please wait for a moment.", flush=True)
    opts = options(argv)
    write_log(f"{tool} {' '.join(argv)}")
    for required in ("framework", "model", "output"):
        if required not in opts:
            return fail("E10007", name=f"--{required}")
    if opts["framework"] != "5":
        return fail("E10001", value=opts["framework"], name="--framework")
    if tool == "atc" and opts.get("soc_version") not in SOCS:
        return fail("E10001", value=opts.get("soc_version", ""), name="--soc_version")
    if tool == "aoe":
        if opts.get("job_type") not in ("1", "2"):
            return fail("E10001", value=opts.get("job_type", ""), name="--job_type")
        device = opts.get("device", "0")
        if (
            os.environ.get("PCB_DOUBLE_CHECK_DEVICES") == "1"
            and not Path(f"/dev/davinci{device}").exists()
        ):
            print(f"[ERROR] aoe: open device {device} failed")
            return 1
    forced = os.environ.get("ATC_DOUBLE_FAIL")
    if forced:
        return fail(forced, name="input", value="")
    model = Path(opts["model"])
    shape = opts.get("input_shape", "")
    name = shape.split(":", 1)[0]
    names = model_inputs(model)
    if names is not None and name not in names:
        return fail("E10016", name=name)
    header = {
        "tool": tool,
        "soc_version": opts.get("soc_version"),
        "input_shape": shape,
        "dynamic_batch_size": opts.get("dynamic_batch_size"),
        "job_type": opts.get("job_type"),
    }
    # What the real atc leaves in its working directory.
    Path("fusion_result.json").write_text("{}\n")
    output = Path(opts["output"] + ".om")
    output.write_bytes(OM_MAGIC + json.dumps(header).encode() + b"\n" + model.read_bytes())
    if tool == "atc":
        print("ATC run success, welcome to the next use.")
    else:
        print(f"[INFO] AOE double: operator tuning done, wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
