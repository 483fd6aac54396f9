"""`make demo`'s main job, run as the README runs it, in a throwaway demo folder."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_demo(demo_dir: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "billingo_pipeline.demo"],
        cwd=REPO,
        env={"BILLINGO_DEMO_DIR": str(demo_dir), "PATH": str(Path(sys.executable).parent), "HOME": str(demo_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def _log_lines(output: str) -> dict[str, list[str]]:
    table = output.split("Sync log (this demo run):")[1].split("\n\n")[0].splitlines()[1:]
    rows = [line.split() for line in table if line.strip()]
    # Skip the header and the "  slug: document …" error lines under the table.
    return {row[0]: row for row in rows if row[0] != "company" and not row[0].endswith(":")}


def test_demo_syncs_three_companies_then_resyncs_with_everything_skipped(tmp_path):
    first = _run_demo(tmp_path)
    rows = _log_lines(first)
    assert set(rows) == {"acme-kft", "duna-trade", "balaton-bistro"}
    assert rows["balaton-bistro"][1] == "PARTIAL" and rows["acme-kft"][1] == rows["duna-trade"][1] == "COMPLETED"
    assert "balaton-bistro: document" in first and "is not a number" in first
    # columns: company status date time seconds processed created updated skipped failed api_calls
    assert rows["acme-kft"][5:10] == ["240", "240", "0", "0", "0"]

    second = _run_demo(tmp_path)
    rows = _log_lines(second)
    assert rows["acme-kft"][5:10] == ["240", "0", "0", "240", "0"]
    assert rows["balaton-bistro"][5:10] == ["60", "0", "0", "59", "1"]
    assert first.split("Warehouse summary:")[1].split("State kept")[0] == second.split("Warehouse summary:")[1].split("State kept")[0]
    assert (tmp_path / "dagster_home").is_dir() and (tmp_path / "warehouse.db").is_file()
