"""`mithril hash` against b3sum, byte for byte: files of sizes around every
block, chunk and subtree boundary, up to 100 MiB; several files in one
call; standard input; names b3sum escapes; a file that cannot be read
(its error line and exit status 3, with the other files still hashed); and
a file cut short while it is being hashed."""

import os
import shutil
import subprocess
import time

import pytest

B3SUM = shutil.which("b3sum")
needs_b3sum = pytest.mark.skipif(B3SUM is None, reason="b3sum not installed")

SIZES = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 3072, 4095,
         4096, 4097, 8191, 8192, 8193, 16384, 31 * 1024 + 7, 65536,
         1024 * 1024 + 1, 10 * 1024 * 1024]

# Known answers from the BLAKE3 test vectors, for when b3sum is absent.
EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
VEC_1024 = "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"


def write_random(path, size):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=600, **kw)


def mithril_hash(mithril_bin, *args, **kw):
    return run([mithril_bin, "hash", *map(str, args)], **kw)


def b3sum(*args, **kw):
    p = run([B3SUM, "--num-threads", "1", *map(str, args)], **kw)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_known_answers(mithril_bin, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    vec = tmp_path / "vec"
    vec.write_bytes(bytes(i % 251 for i in range(1024)))
    p = mithril_hash(mithril_bin, empty, vec)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"{EMPTY}  {empty}\n{VEC_1024}  {vec}\n"
    assert p.stderr == b""


@needs_b3sum
@pytest.mark.parametrize("size", SIZES)
def test_size_matches_b3sum(mithril_bin, tmp_path, size):
    path = write_random(tmp_path / f"f{size}", size)
    p = mithril_hash(mithril_bin, path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b3sum(path)
    assert len(p.stdout.split()[0]) == 64


@needs_b3sum
def test_100_mib_matches_b3sum(mithril_bin, tmp_path):
    path = write_random(tmp_path / "big", 100 * 1024 * 1024)
    p = mithril_hash(mithril_bin, path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b3sum(path)
    path.unlink()


@needs_b3sum
def test_many_files_one_call(mithril_bin, tmp_path):
    paths = [write_random(tmp_path / f"m{s}", s)
             for s in (0, 1, 1024, 1025, 5000, 70000, 300000)]
    spaced = write_random(tmp_path / "with space", 2049)
    paths.append(spaced)
    p = mithril_hash(mithril_bin, *paths)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b3sum(*paths)
    assert len(p.stdout.splitlines()) == len(paths)


@needs_b3sum
@pytest.mark.parametrize("size", [0, 1, 1025, 3 * 1024 * 1024 + 3])
def test_stdin_matches_b3sum(mithril_bin, size):
    data = os.urandom(size)
    want = b3sum(input=data)
    assert want.endswith(b"  -\n")
    p = mithril_hash(mithril_bin, input=data)
    assert p.returncode == 0, p.stderr
    assert p.stdout == want
    p = mithril_hash(mithril_bin, "-", input=data)
    assert p.stdout == want


@needs_b3sum
def test_escaped_names_match_b3sum(mithril_bin, tmp_path):
    a = tmp_path / "back\\slash"
    b = tmp_path / "new\nline"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"y" * 2000)
    p = mithril_hash(mithril_bin, a, b)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b3sum(a, b)
    assert p.stdout.startswith(b"\\")


@needs_b3sum
def test_length_and_no_names_match_b3sum(mithril_bin, tmp_path):
    path = write_random(tmp_path / "l", 5000)
    p = mithril_hash(mithril_bin, "-l", 100, path)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b3sum("-l", 100, path)
    p = mithril_hash(mithril_bin, "--no-names", path)
    assert p.stdout == b3sum("--no-names", path)


def test_missing_file_reports_and_continues(mithril_bin, tmp_path):
    good1 = tmp_path / "good1"
    good1.write_bytes(b"")
    good2 = tmp_path / "good2"
    good2.write_bytes(bytes(i % 251 for i in range(1024)))
    missing = tmp_path / "missing"
    p = mithril_hash(mithril_bin, good1, missing, good2)
    assert p.returncode == 3
    assert p.stdout.decode() == f"{EMPTY}  {good1}\n{VEC_1024}  {good2}\n"
    assert p.stderr.decode() == (
        f"mithril: error: cannot read '{missing}': No such file or "
        "directory\n")


def test_directory_is_an_error(mithril_bin, tmp_path):
    p = mithril_hash(mithril_bin, tmp_path)
    assert p.returncode == 3
    assert p.stdout == b""
    assert p.stderr.decode() == (
        f"mithril: error: cannot read '{tmp_path}': Is a directory\n")


def test_bad_length_is_usage_error(mithril_bin, tmp_path):
    p = mithril_hash(mithril_bin, "-l", "zero", tmp_path)
    assert p.returncode == 2


def test_file_cut_short_while_hashed(mithril_bin, tmp_path):
    """A file truncated while mapped must be reported, never kill the
    command (SIGBUS) nor give a digest of content that was never there."""
    path = write_random(tmp_path / "shrinks", 200 * 1024 * 1024)
    other = tmp_path / "other"
    other.write_bytes(b"")
    seen = set()
    for delay in (0.02, 0.05, 0.1, 0.2):
        with open(path, "r+b") as f:
            f.truncate(200 * 1024 * 1024)
        p = subprocess.Popen([mithril_bin, "hash", str(path), str(other)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        with open(path, "r+b") as f:
            f.truncate(1000)
        out, err = p.communicate(timeout=600)
        assert p.returncode in (0, 3), (p.returncode, err)
        assert out.decode().endswith(f"{EMPTY}  {other}\n")
        if p.returncode == 3:
            assert err.decode() == (
                f"mithril: error: cannot read '{path}': file shrank while "
                "being read\n")
            seen.add("cut")
        else:
            # Truncated before it was opened: the digest of what is left.
            lines = out.decode().splitlines()
            assert len(lines) == 2
            seen.add("whole")
    assert seen


def test_check_reports_ok_failed_and_missing(mithril_bin, tmp_path):
    files = [write_random(tmp_path / n, s) for n, s in
             (("a", 0), ("b", 5000), ("c", 300000), ("back\\slash", 70))]
    p = mithril_hash(mithril_bin, *files)
    assert p.returncode == 0, p.stderr
    sums = tmp_path / "sums"
    sums.write_bytes(p.stdout)
    p = mithril_hash(mithril_bin, "--check", sums)
    assert p.returncode == 0, p.stderr
    names = [str(f) for f in files]
    names[3] = "\\" + names[3].replace("\\", "\\\\")  # escaped as b3sum
    assert p.stdout.decode() == "".join(f"{n}: OK\n" for n in names)

    # One byte changed (same size), one file gone: both FAILED, status 3.
    data = bytearray(files[2].read_bytes())
    data[123456] ^= 1
    files[2].write_bytes(bytes(data))
    files[1].unlink()
    p = mithril_hash(mithril_bin, "-c", sums)
    assert p.returncode == 3
    assert p.stdout.decode() == (f"{names[0]}: OK\n{names[1]}: FAILED\n"
                                 f"{names[2]}: FAILED\n{names[3]}: OK\n")
    assert "2 files did not match" in p.stderr.decode()
    p = mithril_hash(mithril_bin, "-c", "--quiet", sums)
    assert p.returncode == 3
    assert p.stdout.decode() == f"{names[1]}: FAILED\n{names[2]}: FAILED\n"


def test_check_reads_stdin_and_lengths(mithril_bin, tmp_path):
    path = write_random(tmp_path / "l", 5000)
    p = mithril_hash(mithril_bin, "-l", 100, path)
    p = mithril_hash(mithril_bin, "-c", input=p.stdout)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == f"{path}: OK\n"


@needs_b3sum
def test_check_accepts_b3sum_output(mithril_bin, tmp_path):
    a = write_random(tmp_path / "x", 9000)
    b = write_random(tmp_path / "new\nline", 10)
    sums = tmp_path / "sums"
    sums.write_bytes(b3sum(a, b))
    p = mithril_hash(mithril_bin, "--check", sums)
    assert p.returncode == 0, p.stderr
    # Same verdict lines as b3sum's own check, escaped name included.
    assert p.stdout == b3sum("--check", sums)
    escaped = "\\" + str(b).replace("\n", "\\n")
    assert p.stdout.decode() == f"{a}: OK\n{escaped}: OK\n"


def test_check_malformed_line_is_an_error(mithril_bin, tmp_path):
    good = write_random(tmp_path / "g", 10)
    line = mithril_hash(mithril_bin, good).stdout
    sums = tmp_path / "sums"
    sums.write_bytes(b"not a checksum line\n" + line + b"ABCD  " +
                     str(good).encode() + b"\n")
    p = mithril_hash(mithril_bin, "-c", sums)
    assert p.returncode == 3
    assert p.stdout.decode() == f"{good}: OK\n"
    err = p.stderr.decode()
    assert f"{sums}:1: malformed line" in err
    assert f"{sums}:3: malformed line" in err
