"""The container image, without a Docker engine (none exists where these tests run).

Two layers of checks:

- **Static**: the Dockerfile is parsed (a small parser for the subset Dockerfiles use: continuation
  lines, comments, ARG/ENV expansion, exec and shell forms) and held to the rules: multi-stage on one
  slim Python base, a final stage that only copies the built venv (no RUN, so no build tools and
  nothing fetched), a numeric non-root USER, ``ENTRYPOINT ["badged"]``, ``CMD ["run"]``, no
  HEALTHCHECK (Kubernetes probes ``/healthz``), ``EXPOSE 8080``, read-only-root friendly ENV, and a
  ``.dockerignore`` that sends the package and nothing else.
- **Replay** (``slow``): the build stage's own instructions are executed on this machine, in a
  scratch directory standing in for the image's filesystem: COPY honours ``.dockerignore``, each RUN
  runs verbatim through ``/bin/sh -c`` with the image's paths (``/src``, ``/opt/badged``, ...) mapped
  into the scratch directory, under the stage's ENV. So ``python -m venv`` plus a real, complete
  ``pip install '.[k8s]'`` (every dependency, from the index, not an editable install and not this
  test environment's packages) run exactly as written; with pip's cache warm it takes ~15-30 s. Then
  the final stage's ENTRYPOINT and CMD run with the final ENV, as uid/gid 65532 when the tests run as
  root: ``--help``, ``validate`` (with ``--badges`` and through the image's default
  ``BADGED_BADGES``), the ``k8s`` extra importable, and the default ``run`` serving ``/healthz``
  (``/readyz`` 503: no database) and exiting 0 on SIGTERM. Nothing may be written into the venv.
  What differs from a real build: the interpreter is this machine's (this test's own, or a system
  Python such as /usr/bin/python3 when this one sits where uid 65532 cannot reach it, like a pyenv
  under /root; the image uses the base image's 3.12), and so are the base image's other files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
SEED_BADGES = ROOT / "badged" / "demo_data" / "badge.json"
SLIM_PYTHON = re.compile(r"^python:3\.1[1-9]-slim(-[a-z]+)?$")
#: The PATH of the official python images, before any ENV of ours.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- a small Dockerfile parser --------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str] | None:
        if self.value.startswith("["):
            parsed = json.loads(self.value)
            assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), self
            return parsed
        return None

    def flags(self) -> tuple[dict[str, str], list[str]]:
        """`--from=build a b` → ({"from": "build"}, ["a", "b"])."""
        words = shlex.split(self.value)
        options = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            options[name] = value
        return options, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage FROM {self.base}: no {keyword}"
        return found[-1]


def expand(text: str, variables: dict[str, str]) -> str:
    """$VAR and ${VAR} (Dockerfile ARG/ENV substitution; unknown variables become empty)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def parse_env(instruction: Instruction, variables: dict[str, str]) -> dict[str, str]:
    words = shlex.split(instruction.value)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return {words[0]: expand(" ".join(words[1:]), variables)}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        assert sep, f"line {instruction.line}: cannot read ENV {word!r}"
        pairs[key] = expand(value, {**variables, **pairs})
    return pairs


def instructions(text: str) -> Iterator[Instruction]:
    logical, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):  # comments inside a continuation are dropped
            continue
        if not logical:
            start = number
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, value = logical.partition(" ")
        yield Instruction(keyword.upper(), value.strip(), start)
        logical = ""
    assert not logical, "the Dockerfile ends inside a continuation line"


@cache
def parse(text: str) -> tuple[dict[str, str], tuple[Stage, ...]]:
    """(global ARG defaults, stages)."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(expand(words[0], global_args), name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may precede FROM"
            key, _, default = instruction.value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, tuple(stages)


def stages() -> tuple[Stage, ...]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))[1]


def final_env() -> dict[str, str]:
    env = {"PATH": BASE_PATH}
    for instruction in stages()[-1].all("ENV"):
        env.update(parse_env(instruction, env))
    return env


# --- .dockerignore --------------------------------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@cache
def _ignore_rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        rules.append((keep, _pattern(os.path.normpath(line.lstrip("!")).lstrip("/"))))
    return tuple(rules)


def sent_to_builder(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories decides."""
    if relative in {"Dockerfile", ".dockerignore"}:
        return True
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    sent = True
    for keep, pattern in _ignore_rules():
        if any(pattern.match(prefix) for prefix in prefixes):
            sent = keep
    return sent


def package_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "badged").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


# --- static checks --------------------------------------------------------------------------------


def test_multi_stage_on_one_slim_python_base() -> None:
    build, *_, final = stages()
    assert len(stages()) >= 2
    assert SLIM_PYTHON.match(final.base), f"final stage FROM {final.base}: want python:3.1x-slim"
    assert build.base == final.base, "the venv's interpreter paths must exist in the final stage"
    assert build.name, "the build stage needs a name for COPY --from"


def test_final_stage_runs_badged_as_a_numeric_non_root_user() -> None:
    final = stages()[-1]
    assert final.all("USER"), "no USER: the image would run as root"
    user = final.last("USER")
    assert re.fullmatch(r"\d+(:\d+)?", user.value), f"USER {user.value}: numeric, so runAsNonRoot can verify it"
    assert user.value == "65532:65532"
    assert final.last("ENTRYPOINT").exec_form() == ["badged"]
    assert final.last("CMD").exec_form() == ["run"]
    assert final.last("EXPOSE").value.split() == ["8080"]


def test_no_healthcheck() -> None:
    """Kubernetes probes /healthz and /readyz; a HEALTHCHECK would only duplicate them."""
    assert not [i for stage in stages() for i in stage.all("HEALTHCHECK")]


def test_final_stage_only_copies_the_built_venv() -> None:
    build, *_, final = stages()
    allowed = {"ENV", "LABEL", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ARG"}
    assert {i.keyword for i in final.instructions} <= allowed, "no RUN/ADD in the final stage: no build tools"
    for copy in final.all("COPY"):
        options, _ = copy.flags()
        assert options.get("from") == build.name, f"line {copy.line}: the final stage copies only from the build"
    installs = " ".join(i.value for i in build.all("RUN"))
    assert re.search(r"pip install .*\[k8s\]", installs), "the k8s extra (lightkube) makes --configmap work"


def test_environment_suits_a_read_only_root_filesystem() -> None:
    env = final_env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"
    assert env["BADGED_BADGES"] == "/etc/badged/badge.json"
    assert env["PATH"].split(":")[0] == "/opt/badged/bin"
    assert stages()[-1].last("WORKDIR").value == "/tmp"
    read = set(re.findall(r"\bBADGED_[A-Z0-9_]+\b", "".join(p.read_text() for p in (ROOT / "badged").rglob("*.py"))))
    assert {name for name in env if name.startswith("BADGED_")} <= read


def test_dockerignore_sends_the_package_and_nothing_else() -> None:
    for copy in stages()[0].all("COPY"):
        _, words = copy.flags()
        for source in words[:-1]:
            assert sent_to_builder(source), f"COPY {source}: excluded by .dockerignore"
    assert all(sent_to_builder(path) for path in package_files())
    for path in (".git/HEAD", ".venv/bin/python", "tests/conftest.py", "deploy/base/badge.json",
                 "badged/__pycache__/cli.cpython-312.pyc", "badged.egg-info/PKG-INFO", "bench/daemon.py"):
        assert not sent_to_builder(path), f"{path} would be sent to the builder"


# --- replay ---------------------------------------------------------------------------------------


class Replay:
    """The image's filesystem as a scratch directory; container paths under `mapped` live in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mapped: set[str] = set()

    def own(self, path: str) -> Path:
        self.mapped.add(path.rstrip("/") or "/")
        return self.path(path)

    def path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def rewrite(self, text: str) -> str:
        """Container paths → scratch paths, in one pass (a mapped path may itself contain /tmp)."""
        if not self.mapped:
            return text
        alternatives = "|".join(re.escape(p) for p in sorted(self.mapped, key=len, reverse=True))
        return re.sub(rf"(?<![\w./-])({alternatives})(?=/|:|\s|$)", lambda m: str(self.path(m.group(1))), text)


def _copy_context(source: str, destination: Path, many: bool, into_dir: bool) -> None:
    src = ROOT / source
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            relative = str(path.relative_to(ROOT))
            if path.is_file() and sent_to_builder(relative):
                target = destination / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    else:
        target = destination / src.name if (many or into_dir) else destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _reachable_by_anyone(path: Path) -> bool:
    """Executable by any user: the file and every directory above it (a pyenv under /root is not)."""
    path = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _interpreter() -> Path:
    """The replay's `python`: this test's base interpreter, or a system one that uid 65532 can run too."""
    mine = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    if _reachable_by_anyone(mine) or os.geteuid() != 0:
        return mine
    for candidate in (Path("/usr/local/bin/python3"), Path("/usr/bin/python3")):
        if candidate.exists() and _reachable_by_anyone(candidate) and subprocess.run(
                [candidate, "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"],
                capture_output=True, timeout=30, check=False).returncode == 0:
            return candidate
    return mine


def replay_build_stage(replay: Replay, stage: Stage, interpreter: Path) -> None:
    shims = replay.root / ".replay-bin"  # `python`, standing in for the base image's
    shims.mkdir()
    (shims / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(str(interpreter))} "$@"\n')
    (shims / "python").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = f"{shims}:{BASE_PATH}"
    workdir = "/"
    for instruction in stage.instructions:
        if instruction.keyword == "ENV":
            env.update(parse_env(instruction, env))
        elif instruction.keyword == "WORKDIR":
            workdir = os.path.join(workdir, instruction.value)
            replay.own(workdir).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            options, words = instruction.flags()
            assert not options, f"line {instruction.line}: COPY {options} is beyond this replay"
            *sources, destination = words
            target = replay.own(os.path.join(workdir, destination))
            for source in sources:
                assert sent_to_builder(source), f"COPY {source}: excluded by .dockerignore"
                _copy_context(source, target, len(sources) > 1, destination.endswith("/"))
        elif instruction.keyword == "RUN":
            for created in re.findall(r"-m venv\s+(\S+)", instruction.value):
                replay.own(created)
            form = instruction.exec_form()
            shell = ["/bin/sh", "-c", replay.rewrite(instruction.value)]
            command = [replay.rewrite(a) for a in form] if form else shell
            done = subprocess.run(command, cwd=replay.path(workdir), env=env, capture_output=True, text=True,
                                  timeout=240, check=False)
            assert done.returncode == 0, f"line {instruction.line}: RUN {instruction.value}\n{done.stdout}{done.stderr}"
        elif instruction.keyword not in {"LABEL", "ARG"}:
            pytest.fail(f"line {instruction.line}: {instruction.keyword} is beyond this replay: extend it")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _snapshot(directory: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in directory.rglob("*")}


@pytest.fixture
def scratch() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="badged-image-"))
    root.chmod(0o755)  # uid 65532 must reach /opt/badged inside it
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_build_stage_replayed_here_yields_an_image_that_runs(scratch: Path) -> None:
    build, *_, final = stages()
    replay, interpreter = Replay(scratch), _interpreter()
    replay_build_stage(replay, build, interpreter)

    for copy in final.all("COPY"):  # COPY --from=build X X: same path, nothing to move in the replay
        _, (source, destination) = copy.flags()
        assert source == destination and replay.path(source).is_dir(), f"line {copy.line}: nothing built at {source}"
    venv = replay.path(final_env()["PATH"].split(":")[0]).parent
    assert not list((venv / "bin").glob("pip*")), "pip left in the image's venv"

    env = final_env()
    for name in ("/tmp", "/etc/badged"):
        replay.own(name).mkdir(parents=True, exist_ok=True)
    replay.path("/tmp").chmod(0o1777)
    shutil.copy(SEED_BADGES, replay.path(env["BADGED_BADGES"]))
    replay.path("/etc/badged").chmod(0o755)
    env = {key: replay.rewrite(value) for key, value in env.items()}
    env["BADGED_HTTP"] = f"127.0.0.1:{_free_port()}"  # the default :8080 may be taken on this machine
    env["BADGED_DSN"] = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"  # nothing listens there
    entrypoint, cmd = final.last("ENTRYPOINT").exec_form() or [], final.last("CMD").exec_form() or []
    uid, gid = (int(x) for x in final.last("USER").value.split(":"))
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0 and _reachable_by_anyone(interpreter):
        as_user = {"user": uid, "group": gid, "extra_groups": []}
    before = _snapshot(venv)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*entrypoint, *args], cwd=replay.path("/tmp"), env=env, capture_output=True,
                              text=True, timeout=60, check=False, **as_user)

    assert run("--help").returncode == 0
    k8s = subprocess.run([venv / "bin" / "python", "-c", "import lightkube"], env=env, capture_output=True,
                         text=True, timeout=60, check=False, **as_user)
    assert k8s.returncode == 0, f"the k8s extra is missing, so `run --configmap` cannot work: {k8s.stderr}"
    seed = run("validate", "--badges", str(replay.path("/etc/badged/badge.json")))
    assert seed.returncode == 0 and "3 badges valid" in seed.stdout, seed.stderr
    default = run("validate")  # through the image's BADGED_BADGES
    assert default.returncode == 0 and "3 badges valid" in default.stdout, default.stderr

    daemon = subprocess.Popen([*entrypoint, *cmd], cwd=replay.path("/tmp"), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, **as_user)
    try:
        url = f"http://{env['BADGED_HTTP']}"
        deadline, status = time.monotonic() + 30, None
        while status is None and time.monotonic() < deadline and daemon.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                    status = response.status
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert status == 200, f"/healthz never answered; exit {daemon.poll()}"
        with pytest.raises(urllib.error.HTTPError) as unready:  # the database is unreachable: not ready
            urllib.request.urlopen(f"{url}/readyz", timeout=2)
        assert unready.value.code == 503
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
        _, stderr = daemon.communicate(timeout=10)
    assert "Traceback" not in stderr, stderr
    assert _snapshot(venv) == before, "the image wrote into its own files (a read-only root filesystem refuses that)"
