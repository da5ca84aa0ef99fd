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


def test_equation_index_points_at_code_and_notebook_sections_that_exist():
    """EQUATIONS.md: every `file.py:name` is a function or method there, every 'notebook NN §X.Y' a section
    heading of that notebook, and every equation 1..19 is listed."""
    import ast
    import json

    index = (ROOT / "EQUATIONS.md").read_text()
    rows = [line for line in index.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [int(r.split("|")[1]) for r in rows] == list(range(1, 20))
    for file, name in set(re.findall(r"`(\w+\.py):([\w.]+)`", index)):
        tree = ast.parse((ROOT / file).read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {f"{c.name}.{f.name}" for c in tree.body if isinstance(c, ast.ClassDef) for f in c.body
                    if isinstance(f, ast.FunctionDef)}
        assert name in defined, f"EQUATIONS.md names {file}:{name}, which does not exist"
    for nb, section in set(re.findall(r"notebook (\d\d) §(\d\.\d)", index)):
        path = next((ROOT / "notebooks").glob(f"{nb}_*.ipynb"))
        headings = [line for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "markdown"
                    for line in "".join(cell["source"]).splitlines() if line.startswith("#")]
        assert any(h.startswith(f"## {section} ") for h in headings), f"{path.name} has no section {section}"
    outside = "../" + "shared"  # spelled in two parts so that this file does not match itself
    for path in [*ROOT.glob("*.py"), *ROOT.glob("*.md"), *ROOT.glob("notebooks/*.ipynb"),
                 *ROOT.glob("tests/*.py")]:
        assert outside not in path.read_text(), f"{path.name} refers to a file outside the repository"


def test_modules_import_in_one_direction():
    """The layering the README describes: norm, data <- models, losses <- official <- sample <- evaluate <-
    train; paint and bench on top. A module imports only modules of a lower layer (no cycles)."""
    import ast

    layer = dict(norm=0, data=0, models=1, losses=1, official=2, sample=3, evaluate=4, train=5, paint=6,
                 bench=6)
    for module, level in layer.items():
        tree = ast.parse((ROOT / f"{module}.py").read_text())
        nodes = list(ast.walk(tree))
        imported = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
        against = sorted(m for m in imported & set(layer) if layer[m] >= level and m != module)
        assert not against, f"{module}.py imports {against}, which are not below it"
