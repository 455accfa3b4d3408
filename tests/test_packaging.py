"""A wheel that holds the whole program, proven from outside the source tree.

``python -m build`` makes the sdist and, from it, the wheel (so the sdist is shown to be
complete too); the wheel goes without ``-e`` into a fresh venv, which sees the test
environment's packages for the dependencies (nothing is downloaded) but statbus only from
the wheel: every module is imported there and must come from the venv, and the commands
run from its ``bin/``.  Another statbus on the path (this checkout, installed ``-e``) would
otherwise quietly stand in for a module the wheel lacks.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Dict, NamedTuple

import pytest

from collector_helpers import end_daemon
from source_tree import REPO, source_modules
from statbus.pipeline.layout import RunLayout

NOT_SHIPPED = ("tests/", "scripts/", "plugins/examples/")


class Install(NamedTuple):
    dist: Path
    venv: Path
    site_packages: Path
    env: Dict[str, str]

    def run(self, *command: str, timeout: float = 120.0, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(command), cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def statbus(self, *args: str, cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return self.run(str(self.venv / "bin" / "statbus"), *args, cwd=cwd, timeout=timeout)


def _checked(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{what} exited with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _see_this_environment(venv_site: Path) -> None:
    """When the tests run in a venv of their own, the new venv's ``--system-site-packages``
    reach only the base interpreter's: let it see this venv's packages as well (after its own)."""
    if sys.prefix == sys.base_prefix:
        return
    outer = [path for path in site.getsitepackages() if os.path.isdir(path)]
    (venv_site / "_statbus_test_outer_env.pth").write_text(
        f"import site; [site.addsitedir(p) for p in {outer!r}]\n", encoding="utf-8")


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:
    base = tmp_path_factory.mktemp("packaging")
    dist, venv = base / "dist", base / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # A copy without what earlier builds and installs left: setuptools reads an existing
    # *.egg-info/SOURCES.txt, which would put files in the sdist that the build config leaves out.
    source = base / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "dist", "__pycache__",
                                                                 ".pytest_cache", ".hypothesis", "results"))
    built = subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=300, env=env, cwd=base)
    _checked(built, "python -m build")
    _checked(subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                            capture_output=True, text=True, timeout=120, env=env), "python -m venv")
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                    capture_output=True, text=True, check=True, env=env).stdout.strip())
    _see_this_environment(venv_site)
    (wheel,) = dist.glob("statbus-*.whl")
    _checked(subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                            capture_output=True, text=True, timeout=120, env=env), "pip install (the wheel)")
    return Install(dist, venv, venv_site, dict(env, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}"))


def test_wheel_holds_every_module_and_nothing_else(install: Install) -> None:
    (wheel,) = install.dist.glob("statbus-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("statbus/")}
        entry_points = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
    expected = {name.replace(".", "/") + ("/__init__.py" if path.endswith("__init__.py") else ".py")
                for name, path in source_modules().items()}
    assert shipped - expected == set(), "the wheel holds files that are no module of the source tree"
    assert expected - shipped == set(), "the wheel lacks modules of the source tree (a folder without __init__.py?)"
    assert "statbus = statbus.pipeline.cli.main:main" in entry_points
    assert "[statbus.stats_writer]" in entry_points


def test_sdist_holds_the_floors_and_no_tests(install: Install) -> None:
    (sdist,) = install.dist.glob("statbus-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert {"pyproject.toml", "setup.py", "README.md", "pipeline/mlagents/launcher.py"} <= set(names)
    assert [n for n in names if n.startswith(NOT_SHIPPED)] == []


def test_every_module_imports_from_the_installed_wheel(install: Install, tmp_path: Path) -> None:
    modules = sorted(source_modules())
    script = (
        "import importlib, json, os, sys\n"
        "names, home = json.loads(sys.argv[1]), os.path.realpath(sys.argv[2]) + os.sep\n"
        "wrong = {}\n"
        "for name in names:\n"
        "    try:\n"
        "        module = importlib.import_module(name)\n"
        "    except BaseException as exc:\n"
        "        wrong[name] = f'{type(exc).__name__}: {exc}'\n"
        "        continue\n"
        "    if not os.path.realpath(module.__file__).startswith(home):\n"
        "        wrong[name] = f'imported from {module.__file__}, not from the installed wheel'\n"
        "print(json.dumps(wrong))\n"
    )
    result = _checked(install.run(str(install.venv / "bin" / "python"), "-c", script, json.dumps(modules),
                                  str(install.site_packages / "statbus"), cwd=tmp_path), "importing every module")
    assert len(modules) > 100 and "statbus.pipeline.mlagents.launcher" in modules
    assert json.loads(result.stdout.splitlines()[-1]) == {}


def test_commands_run_from_the_installed_wheel(install: Install, tmp_path: Path) -> None:
    top = _checked(install.statbus("--help", cwd=tmp_path), "statbus --help").stdout
    assert "learn" in top and "demo" in top
    learn = _checked(install.statbus("learn", "--help", cwd=tmp_path), "statbus learn --help").stdout
    assert "trainer_config_path" in learn and "--run-id" in learn
    plugins = _checked(install.statbus("plugins", cwd=tmp_path), "statbus plugins").stdout
    shipped = [line.split()[1] for line in plugins.splitlines() if line.startswith("statbus.stats_writer")]
    assert sorted(shipped) == ["console", "gauges", "jsonl", "mlflow", "tensorboard", "wandb"]


def test_demo_runs_from_the_installed_wheel(install: Install, tmp_path: Path) -> None:
    results = tmp_path / "results"
    try:
        result = install.statbus("demo", "--results-dir", str(results), "--run-id", "demo", "--duration", "2",
                                 "--env-workers", "1", cwd=tmp_path, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "nothing was lost." in result.stdout
    finally:
        end_daemon(RunLayout(str(results), "demo"))
