"""``Status`` checked against ``hsa_status_t`` in the real ``hsa.h`` / ``hsa_ext_amd.h``.

The header's enumerators (and the comments documenting them) are read from gcc's
preprocessor output, and their values from a compiled C program, so the test needs no
hardcoded header path and fails if either side gains a value the other lacks.
"""

import re
import shutil
import subprocess

import pytest

from rocr.status import Status, status_c_name, status_string

HEADERS = ("hsa/hsa.h", "hsa/hsa_ext_amd.h")
_INCLUDES = "".join(f"#include <{h}>\n" for h in HEADERS)
_ENUMERATOR = re.compile(r"\b(HSA_STATUS_\w+)\s*=")
_DOCUMENTED = re.compile(r"/\*\*((?:(?!\*/).)*)\*/\s*(HSA_STATUS_\w+)\s*=", re.DOTALL)


def _gcc() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    return gcc


def _preprocess(keep_comments: bool) -> str:
    args = [_gcc(), "-E", "-x", "c", "-"] + (["-C"] if keep_comments else [])
    result = subprocess.run(args, input=_INCLUDES, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("HSA headers (libhsa-runtime-dev: hsa/hsa.h, hsa/hsa_ext_amd.h) not found")
    return result.stdout


def _normalize(text: str) -> str:
    text = re.sub(r"^\s*\*", "", text, flags=re.MULTILINE)
    return " ".join(text.replace("::", "").split())


@pytest.fixture(scope="module")
def header_names() -> list[str]:
    return sorted(set(_ENUMERATOR.findall(_preprocess(keep_comments=False))))


@pytest.fixture(scope="module")
def header_values(header_names: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    # Print the header's enumerators and Python's names alike, so a name missing on the C
    # side is a compile error rather than a silent skip.
    names = sorted(set(header_names) | {status_c_name(s) for s in Status})
    tmp = tmp_path_factory.mktemp("status_probe")
    src = tmp / "probe.c"
    exe = tmp / "probe"
    body = "".join(f'  printf("{n} %lld\\n", (long long)({n}));\n' for n in names)
    src.write_text(f"#include <stdio.h>\n{_INCLUDES}int main(void) {{\n{body}  return 0;\n}}\n")
    build = subprocess.run(
        [_gcc(), "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(src)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"probe failed to compile:\n{build.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def test_every_status_matches_header(header_values: dict[str, int]) -> None:
    for status in Status:
        assert header_values[status.c_name] == status.value, status.c_name


def test_every_header_value_is_a_status(header_names: list[str], header_values: dict) -> None:
    assert "HSA_STATUS_ERROR_INVALID_MEMORY_POOL" in header_names
    for name in header_names:
        status = Status(header_values[name])
        assert status.c_name == name


def test_status_strings_match_header_comments() -> None:
    documented = _DOCUMENTED.findall(_preprocess(keep_comments=True))
    assert {name for _, name in documented} == {s.c_name for s in Status}
    for comment, name in documented:
        status = Status[name.removeprefix("HSA_STATUS_")]
        text = _normalize(status_string(status))
        # Whole comment, except that cross-references to other APIs are left out (as ROCr's
        # hsa_status_string does for HSA_STATUS_ERROR_MEMORY_FAULT).
        assert text.startswith(f"{name}: ") and text.endswith(".")
        assert f"{name}: {_normalize(comment)}".startswith(text)


def test_names_and_lookup() -> None:
    assert Status.ERROR_INVALID_ARGUMENT == 0x1001
    assert Status.ERROR_INVALID_ARGUMENT.c_name == "HSA_STATUS_ERROR_INVALID_ARGUMENT"
    assert status_c_name(0x1000) == "HSA_STATUS_ERROR"
    assert Status.ERROR_MEMORY_APERTURE_VIOLATION == 41
    assert Status.CU_MASK_REDUCED == 44
    assert status_string(0) == ("HSA_STATUS_SUCCESS: The function has been executed successfully.")
    with pytest.raises(ValueError):
        status_string(0x1FFF)
