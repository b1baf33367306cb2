"""The one writer of every output file: refuses what is not a regular file before writing, writes a temporary file
in the same folder and renames it, writes through a symlink to a regular file, and turns every OS error into one
line (OutputError, exit 1)."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from gpuprobe.cli.app import main
from gpuprobe.errors import OutputError
from gpuprobe.results import io

ROOT = Path(__file__).resolve().parents[2]
H100 = ROOT / "tests" / "data" / "h100-probe-2026-11-25.json"


def test_writes_atomically_through_a_temporary_file_in_the_same_folder(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a.json"
    seen: list[tuple[str, str]] = []
    real = os.replace

    def spy(src: str, dst: str) -> None:
        seen.append((os.fspath(src), os.fspath(dst)))
        assert not target.exists()  # nothing visible (not even 0 bytes) before the rename
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", spy)
    io.write_atomic(target, "hello\n")
    assert target.read_text() == "hello\n"
    assert len(seen) == 1 and Path(seen[0][0]).parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_refuses_a_folder_and_a_path_below_a_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        io.write_json_atomic(tmp_path, {})
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        io.write_json_atomic(tmp_path / "f" / "sub" / "r.json", {})
    assert (tmp_path / "f").read_text() == "x"


def test_refuses_a_fifo_without_replacing_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        io.write_json_atomic(fifo, {"a": 1})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_refuses_a_device_node_and_a_symlink_to_one(tmp_path: Path) -> None:
    link = tmp_path / "null.json"
    link.symlink_to("/dev/null")
    with pytest.raises(OutputError, match=r"/dev/null.*not a regular file"):
        io.write_atomic(link, "x")
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    node = tmp_path / "dev"
    try:
        os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return  # not root: the symlink case above covers a device
    with pytest.raises(OutputError, match="not a regular file"):
        io.write_atomic(node, "x")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_refuses_a_socket(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(OutputError, match="not a regular file"):
            io.write_atomic(path, "x")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_symlink_to_a_regular_file_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "data" / "real.json"
    real.parent.mkdir()
    real.write_text("{}")
    real.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    io.write_json_atomic(link, {"a": 1})
    assert link.is_symlink() and json.loads(real.read_text()) == {"a": 1}
    assert stat.S_IMODE(real.stat().st_mode) == 0o640  # the file keeps its mode
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.json"]


def test_a_new_file_gets_the_usual_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        io.write_atomic(tmp_path / "r.json", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


@pytest.mark.parametrize(("code", "words"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                             (errno.EACCES, "permission denied")])
def test_os_errors_are_one_line_and_leave_nothing_behind(tmp_path: Path, monkeypatch, code: int,
                                                         words: str) -> None:
    def fail(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(io.os, "fsync", fail)
    with pytest.raises(OutputError, match=words) as info:
        io.write_atomic(tmp_path / "r.json", "x")
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_a_name_too_long_and_a_proc_path_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        io.write_atomic(tmp_path / ("x" * 300 + ".json"), "x")
    with pytest.raises(OutputError, match="cannot write"):
        io.write_atomic("/proc/gpuprobe-test.json", "x")
    with pytest.raises(OutputError, match="cannot write"):
        io.write_atomic("/proc/self/comm-gpuprobe/r.json", "x")


def test_report_to_a_fifo_is_one_error_line(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "r.html"
    os.mkfifo(fifo)
    assert main(["report", str(H100), "--html", str(fifo), "--no-qualify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: cannot write the HTML report {fifo}: it is a FIFO") and "Traceback" not in err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_import_into_a_folder_is_one_error_line(tmp_path: Path, capsys) -> None:
    nccl = ROOT / "tests" / "data" / "nccl-tests" / "nccl-tests-all_reduce-h100x1.txt"
    assert main(["import", str(nccl), "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: cannot write the results file {tmp_path}: it is a folder"), err


def test_qualify_junit_below_a_file_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("")
    assert main(["qualify", "--input", str(H100), "--junit", str(tmp_path / "f" / "j.xml")]) == 1
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err
