"""The `gradcheck` command line without a server: its help states the tolerance contract, the
same table as the service's and as docs/client.md."""

from pathlib import Path

import pytest
from gradcheck_client.cli import DEFAULT_TOLERANCE, load_array, main

from app.numerics.candidate import DEFAULT_TOLERANCE as SERVICE_TOLERANCE

ROOT = Path(__file__).resolve().parents[2]


def test_the_clis_table_is_the_services() -> None:
    assert DEFAULT_TOLERANCE == SERVICE_TOLERANCE


def test_check_help_shows_the_tolerance_table(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "--help"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for dtype, (atol, rtol) in SERVICE_TOLERANCE.items():
        assert any(line.split() == [dtype, f"{atol:g}", f"{rtol:g}"] for line in lines), dtype


def short(value: float) -> str:
    """1e-08 as the docs write it, 1e-8."""
    return f"{value:.0e}".replace("e-0", "e-")


def test_docs_client_md_states_the_same_table() -> None:
    page = (ROOT / "docs" / "client.md").read_text()
    for dtype, (atol, rtol) in SERVICE_TOLERANCE.items():
        assert f"| {dtype} | {short(atol)} | {short(rtol)} |" in page, dtype
    assert "default 1e-5" not in page


@pytest.mark.parametrize(
    ("text", "kind"), [("0\n1\n2\n", "i"), ("0,1\n1,0\n", "i"), ("0.5\n1\n", "f")]
)
def test_text_files_of_integers_are_integers(tmp_path: Path, text: str, kind: str) -> None:
    (tmp_path / "y.csv").write_text(text)
    assert load_array(str(tmp_path / "y.csv")).dtype.kind == kind
