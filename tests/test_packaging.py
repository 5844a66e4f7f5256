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
