from __future__ import annotations

import subprocess
import sys

import pytest

from pcb.cli.main import main
from pcb.cli.parser import build_parser


@pytest.mark.parametrize("text", ["0", "-4", "2.5", "x", "1,,0"])
def test_bad_batch_sizes_exit_non_zero_with_a_message(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["perf", "--run", "r", "--batch-sizes", text])
    assert exit_info.value.code == 2
    assert "batch size" in capsys.readouterr().err


def test_batch_sizes_parse():
    args = build_parser().parse_args(["perf", "--run", "r", "--batch-sizes", "1, 4,64"])
    assert args.batch_sizes == [1, 4, 64]


def test_unknown_backend_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["infer", "--run", "r", "--backend", "tensorflow"])
    assert "invalid choice: 'tensorflow'" in capsys.readouterr().err


def test_user_errors_print_one_line_and_exit_1(tmp_path, capsys):
    code = main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--run", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint ") and "Traceback" not in err
    assert not (tmp_path / "model").exists()


def test_every_stage_has_help():
    for stage in ["demo-data", "export", "preprocess", "infer", "evaluate", "perf", "report"]:
        result = subprocess.run(
            [sys.executable, "-m", "pcb", stage, "--help"], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "usage: pcb " + stage in result.stdout
