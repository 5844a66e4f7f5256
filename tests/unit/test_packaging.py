"""pyproject.toml and environment.yml name the same packages; README commands match .ci/run."""
import re
import tomllib

import yaml

# conda names that differ from PyPI names
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_packages_as_pyproject(repo):
    py = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pyproject = {_name(r) for r in py["dependencies"]} | {_name(r) for r in py["optional-dependencies"]["test"]}
    env = yaml.safe_load((repo / "environment.yml").read_text())
    conda = set()
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            n = _name(item)
            if n in ("python", "pip", "-e"):
                continue
            conda.add(CONDA_TO_PYPI.get(n, n))
    assert conda == pyproject, f"only in environment.yml: {conda - pyproject}; only in pyproject: {pyproject - conda}"


def test_spikingjelly_is_pinned_identically(repo):
    py = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "spikingjelly==0.0.0.0.14" in py
    assert "spikingjelly==0.0.0.0.14" in (repo / "environment.yml").read_text()


def test_ci_runs_the_readme_commands(repo):
    readme = (repo / "README.md").read_text()
    ci = (repo / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    assert test_cmd in ci, "the README's test command must be what .ci/run runs"


def test_readme_snakemake_commands_dry_run(repo, tmp_path):
    """Every `snakemake ...` line of the README parses and builds its DAG (run as a dry-run)."""
    import shlex
    import subprocess
    import sys

    from helpers.wfutil import copy_workflow, env

    wd = copy_workflow(tmp_path / "wf")
    readme = (repo / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.split("#")[0].strip()
                if part.startswith("snakemake ") and "--report" not in part and "--unlock" not in part:
                    cmds.append(part)
    assert any("quick.yaml" in c for c in cmds), cmds
    for c in cmds:
        args = shlex.split(c)[1:]
        if "--workflow-profile" in args and "slurm" in args[args.index("--workflow-profile") + 1]:
            continue  # needs a SLURM cluster (tests/slurm/test_slurm.py runs that profile for real)
        p = subprocess.run([sys.executable, "-m", "snakemake", *args, "-n", "--quiet"], cwd=wd, env=env(),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"README command fails: {c}\n{p.stderr[-2000:]}"
