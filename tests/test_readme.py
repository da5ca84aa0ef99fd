"""The README tells the truth: CI runs its test command, and its file map names files that exist."""
import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    test_cmds = [c for c in readme_commands() if "pytest" in c]
    assert test_cmds, "README has no test command"
    pytest_part = test_cmds[0].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert pytest_part in ci, f"CI does not run the README's test command {pytest_part!r}"


def test_file_map_names_existing_files():
    names = re.findall(r"^\| `([^`]+)` \|", README, flags=re.M)
    assert names, "README has no file map"
    missing = [n for n in names if not (ROOT / n.rstrip("/")).exists()]
    assert not missing, f"README file map names missing files: {missing}"
