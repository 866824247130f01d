"""atc and aoe: their command lines (facts.md section 4) and what their output says.

Pure: building a command or reading an output touches no file and runs nothing; the convert
stage (convert.py) runs them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..constants import INPUT_CHANNELS, INPUT_HEIGHT, INPUT_NAME, INPUT_WIDTH
from ..errors import PcbError
from .chips import soc_version

FRAMEWORK_ONNX = 5
INPUT_FORMAT = "NCHW"
DEFAULT_LOG_LEVEL = "error"
# AOE job types: 1 = subgraph tuning, 2 = operator tuning (the guide's 310P_aoe column).
AOE_SUBGRAPH = 1
AOE_OPERATOR = 2

ATC_SUCCESS = "ATC run success"
ATC_FAILED = "ATC run failed"
# A coded message: E10016, E19010, EZ3003, EC0010, E40000, ...; newer CANN puts
# `[PID: 10490] 2025-03-18-09:02:18.501.341 ` between the code and the text.
_CODED = re.compile(r"^\s*(E[0-9A-Z]{4,5}):\s*(?:\[PID:\s*\d+\]\s*)?(?:[\d:.-]+\s+)?(.*\S)\s*$")
_SOLUTION = re.compile(r"^\s*Solution:\s*(.*\S)")
_POSSIBLE_CAUSE = re.compile(r"^\s*Possible Cause:\s*(.*\S)")
# Where the toolkit writes its logs when ASCEND_PROCESS_LOG_PATH is not set.
DEFAULT_LOG_DIR = "~/ascend/log"


def input_shape(batch_size: int | None) -> str:
    """`input_1:16,3,384,128`; None = the dynamic batch axis, -1."""
    batch = -1 if batch_size is None else batch_size
    if batch_size is not None and batch_size <= 0:
        raise PcbError(f"batch size must be positive, got {batch_size}")
    return f"{INPUT_NAME}:{batch},{INPUT_CHANNELS},{INPUT_HEIGHT},{INPUT_WIDTH}"


def atc_command(
    model: str,
    output: str,
    chip: str,
    batch_size: int | None = None,
    dynamic_batch_sizes: Sequence[int] = (),
    log: str = DEFAULT_LOG_LEVEL,
) -> list[str]:
    """atc for one static batch size, or (batch_size None) one dynamic-batch model whose gears
    are `dynamic_batch_sizes`. atc appends `.om` to `output`."""
    if batch_size is None and not dynamic_batch_sizes:
        raise PcbError("a dynamic-batch model needs its batch sizes, e.g. 1,4,8,16")
    if batch_size is not None and dynamic_batch_sizes:
        raise PcbError("give a static batch size or dynamic batch sizes, not both")
    command = [
        "atc",
        f"--framework={FRAMEWORK_ONNX}",
        f"--model={model}",
        f"--output={output}",
        f"--input_format={INPUT_FORMAT}",
        f"--input_shape={input_shape(batch_size)}",
    ]
    if dynamic_batch_sizes:
        gears = sorted(set(dynamic_batch_sizes))
        if any(g <= 0 for g in gears):
            raise PcbError(f"dynamic batch sizes must be positive, got {list(dynamic_batch_sizes)}")
        command.append("--dynamic_batch_size=" + ",".join(str(g) for g in gears))
    command += [f"--soc_version={soc_version(chip)}", f"--log={log}"]
    return command


def aoe_command(
    model: str,
    output: str,
    batch_size: int,
    job_type: int = AOE_OPERATOR,
    device: int | None = None,
) -> list[str]:
    """AOE tuning of one static batch size; it writes `<output>.om` like atc. AOE runs the
    operators on the NPU, so it takes the chip from the device rather than a --soc_version."""
    if job_type not in (AOE_SUBGRAPH, AOE_OPERATOR):
        raise PcbError(f"AOE job type {job_type}: 1 (subgraph) or 2 (operator tuning)")
    command = [
        "aoe",
        f"--framework={FRAMEWORK_ONNX}",
        f"--model={model}",
        f"--job_type={job_type}",
        f"--output={output}",
        f"--input_format={INPUT_FORMAT}",
        f"--input_shape={input_shape(batch_size)}",
    ]
    if device is not None:
        command.append(f"--device={device}")
    return command


@dataclass(frozen=True)
class ToolError:
    """One coded message of atc / aoe: `E10016`, its text, and its suggested solution."""

    code: str
    message: str
    cause: str = ""
    solution: str = ""

    def describe(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.cause:
            text += f" (possible cause: {self.cause})"
        if self.solution:
            text += f" (solution: {self.solution})"
        return text


@dataclass(frozen=True)
class AtcOutcome:
    """success: True/False when atc said so, None when its output says neither (a crash)."""

    success: bool | None
    errors: tuple[ToolError, ...]


def parse_atc_output(text: str) -> AtcOutcome:
    """atc's verdict line and every coded error message, with their cause and solution."""
    success: bool | None = None
    if ATC_SUCCESS in text:
        success = True
    if ATC_FAILED in text:
        success = False
    errors: list[ToolError] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        coded = _CODED.match(line)
        if coded:
            if current:
                errors.append(ToolError(**current))
            current = {"code": coded.group(1), "message": coded.group(2)}
            continue
        if current is None:
            continue
        solution = _SOLUTION.match(line)
        cause = _POSSIBLE_CAUSE.match(line)
        if solution:
            current["solution"] = solution.group(1)
        elif cause:
            current["cause"] = cause.group(1)
        elif "TraceBack" in line:
            errors.append(ToolError(**current))
            current = None
    if current:
        errors.append(ToolError(**current))
    return AtcOutcome(success, tuple(errors))


def log_location(env: Mapping[str, str] | None = None) -> str:
    """Where atc / aoe / ais_bench write their detailed logs, from their environment."""
    env = os.environ if env is None else env
    if env.get("ASCEND_SLOG_PRINT_TO_STDOUT") == "1":
        return "the tool's own output (ASCEND_SLOG_PRINT_TO_STDOUT=1)"
    path = env.get("ASCEND_PROCESS_LOG_PATH")
    return path if path else DEFAULT_LOG_DIR


def failure_message(
    tool: str,
    name: str,
    returncode: int,
    output: str,
    output_file: str,
    log_dir: str,
) -> str:
    """What a failed conversion tells the user: the coded lines, or the last lines of output
    when there is none, and where the whole output and the tool's logs are."""
    outcome = parse_atc_output(output)
    if outcome.errors:
        detail = "; ".join(e.describe() for e in outcome.errors)
    else:
        tail = [line for line in output.strip().splitlines() if line.strip()][-5:]
        detail = " / ".join(tail) if tail else "no output"
    hints = []
    codes = {e.code for e in outcome.errors}
    if "E19010" in codes:
        hints.append("the ONNX opset is too new for this CANN: export with --opset 11")
    if "E10016" in codes:
        hints.append(f"the model's input must be named {INPUT_NAME}: re-export it with pcb")
    hint = (" Hint: " + "; ".join(hints) + ".") if hints else ""
    return (
        f"{tool} failed converting {name} (exit status {returncode}): {detail}.{hint} "
        f"Full output: {output_file}; {tool}'s detailed logs: {log_dir}."
    )
