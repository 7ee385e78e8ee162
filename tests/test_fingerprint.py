"""Code fingerprints count real code changes only, and follow imports wherever they are."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from critperiods.pipeline.fingerprint import Fingerprints, c_text, source_digest

ROOT = Path(__file__).resolve().parents[1]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A package ``pkg`` and two stage scripts."""
    write(tmp_path, {
        "pkg/__init__.py": '''
            """The package."""
            from pkg import base


            def helper():
                from pkg import heavy
                return heavy
        ''',
        "pkg/base.py": "X = 1\n",
        "pkg/heavy.py": "Y = 2\n",
        "pkg/lazy.py": '''
            def f():
                from .base import X
                return X
        ''',
        "pkg/model.py": '''
            from pkg.lazy import f
            SOURCE = "kernel.c"
        ''',
        "pkg/kernel.c": "int f(void) { return 1; } /* one */\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/deep.py": "from .. import base\nfrom . import leaf\n",
        "pkg/sub/leaf.py": "Z = 3\n",
        "pkg/plotting.py": "import pkg.base\n",
        "scripts/a.py": "from pkg.model import f\nprint(f())\n",
        "scripts/b.py": "import pkg.sub.deep\n",
        "scripts/c.py": "from pkg import helper\n",
    })
    return tmp_path


def sources(root: Path, script: str) -> set[str]:
    return set(Fingerprints(root, "pkg").sources(root / "scripts" / script))


def test_comments_docstrings_and_layout_do_not_count():
    a = '''
        """Module docstring."""
        def f(x, y):
            """Docstring."""
            # a comment
            return (x +
                    y)  # another


        class C:
            """Only a docstring."""
    '''
    b = "def f(x, y):\n    return x + y\nclass C:\n    pass\n"
    c = "def f(x, y):\n    return x + y\nclass C:\n    ...\n"
    assert source_digest(textwrap.dedent(a)) == source_digest("def f(x, y): return x + y\n"
                                                              "class C: 'doc'\n")
    assert source_digest('x = "a"\n') == source_digest("x = 'a'\n")
    assert source_digest(b) != source_digest(c)  # a statement is code
    assert source_digest("def f(x, y):\n    return x + y\n") != source_digest(
        "def f(x, y):\n    return x - y\n")
    assert source_digest("x = 'text'\n") != source_digest("x = 'other text'\n")


def test_c_sources_lose_comments_and_blanks_but_keep_string_literals():
    a = 'int f(void) {\n    // note\n    return 1; /* multi\nline */\n}\nchar *s = "a // b";\n'
    b = "int f(void) {\nreturn 1;\n}\n\nchar *s = \"a // b\";\n"
    assert c_text(a) == c_text(b)
    assert '"a // b"' in c_text(a)
    assert c_text("int x = 1;") != c_text("int x = 2;")


def test_imports_are_followed_at_any_depth_including_lazy_and_relative(package):
    found = sources(package, "a.py")
    # model → lazy (module level) → base (inside a function, relatively) + the C file it names
    assert {"pkg/model.py", "pkg/lazy.py", "pkg/base.py", "pkg/kernel.c",
            "scripts/a.py"} <= found
    deep = sources(package, "b.py")
    assert {"pkg/sub/deep.py", "pkg/sub/leaf.py", "pkg/sub/__init__.py", "pkg/base.py"} <= deep
    assert "pkg/model.py" not in deep and "pkg/kernel.c" not in deep


def test_a_parent_package_counts_its_module_level_imports_only(package):
    """Importing pkg.model runs pkg/__init__.py, whose helper() is never called unless
    someone binds pkg itself; `from pkg import helper` does."""
    implicit = sources(package, "a.py")
    assert "pkg/__init__.py" in implicit and "pkg/base.py" in implicit
    assert "pkg/heavy.py" not in implicit
    assert "pkg/heavy.py" in sources(package, "c.py")


def test_a_change_reaches_exactly_the_scripts_that_import_it(package):
    before = {s: Fingerprints(package, "pkg").stage(package / "scripts" / s)
              for s in ("a.py", "b.py", "c.py")}

    def after() -> dict[str, str]:
        fp = Fingerprints(package, "pkg")
        return {s: fp.stage(package / "scripts" / s) for s in before}

    (package / "pkg/lazy.py").write_text("def f():\n    # why\n    from .base import X\n"
                                         "    return X\n")
    assert after() == before  # a comment
    (package / "pkg/kernel.c").write_text("\n    int f(void) { return 1; }  // same\n\n")
    assert after() == before  # the C file, reindented, another comment
    (package / "pkg/kernel.c").write_text("int f(void) { return 2; }\n")
    changed = after()
    assert changed["a.py"] != before["a.py"]
    assert changed["b.py"] == before["b.py"] and changed["c.py"] == before["c.py"]
    (package / "pkg/sub/leaf.py").write_text("Z = 4\n")
    again = after()
    assert again["b.py"] != before["b.py"] and again["a.py"] == changed["a.py"]


def test_fingerprints_do_not_depend_on_where_the_repository_is(package, tmp_path_factory):
    import shutil

    copy = tmp_path_factory.mktemp("elsewhere") / "repo"
    shutil.copytree(package, copy)
    assert (Fingerprints(package, "pkg").stage(package / "scripts/a.py")
            == Fingerprints(copy, "pkg").stage(copy / "scripts/a.py"))


def test_the_stage_scripts_reach_the_modules_they_use():
    """On this repository: λ̂ runs the sampler and the native max-pool, never the
    calibration, and its two stages share their inputs' module, not each other; evaluation,
    training and the aggregation never reach the sampler; plots.py reaches only the
    plots."""
    fp = Fingerprints(ROOT)
    llc = set(fp.sources(ROOT / "scripts/llc.py"))
    assert {"critperiods/measure/llc/sampler.py", "critperiods/train/native.py",
            "critperiods/train/max_pool2.c", "scripts/llc.py"} <= llc
    assert "critperiods/measure/llc/calibration.py" not in llc
    for script in ("train", "evaluate", "prepare_data", "aggregate"):
        sources = fp.sources(ROOT / f"scripts/{script}.py")
        assert "critperiods/measure/llc/sampler.py" not in sources, script
        assert "critperiods/results/plots.py" not in sources, script
    assert "critperiods/train/training.py" in fp.sources(ROOT / "scripts/train.py")
    # the two λ̂ stages share the sampler's settings and images, and neither reads the other
    descent = set(fp.sources(ROOT / "scripts/llc_descent.py"))
    assert "critperiods/pipeline/llc_inputs.py" in llc & descent
    assert "critperiods/pipeline/stages/llc.py" not in descent
    assert "critperiods/pipeline/stages/llc_descent.py" not in llc
    assert len({fp.stage(p) for p in (ROOT / "scripts").glob("*.py")}) == len(
        list((ROOT / "scripts").glob("*.py")))


_LOADED = """
import json, sys
sys.modules["snakemake"] = type(sys)("snakemake")  # the object Snakemake injects; unused here
for line in open(sys.argv[1]):
    if line.startswith(("from critperiods", "import critperiods")):
        exec(line)
print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()
                        if n.startswith("critperiods") and getattr(m, "__file__", None))))
"""


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_every_module_a_stage_loads_is_in_its_fingerprint(script):
    """Checked against Python itself, not against the fingerprint's own reading: the
    critperiods modules that importing a stage script's imports really loads are all
    hashed into that stage's fingerprint, so editing any of them reruns the stage."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LOADED, str(ROOT / "scripts" / script)],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = {Path(p).resolve().relative_to(ROOT).as_posix()
              for p in json.loads(out.stdout.splitlines()[-1])}
    assert loaded, script
    assert loaded <= set(Fingerprints(ROOT).sources(ROOT / "scripts" / script)), (
        loaded - set(Fingerprints(ROOT).sources(ROOT / "scripts" / script)))


def test_a_module_imported_by_a_computed_name_counts_where_the_workflow_names_it(package):
    """``by_name``: the architecture the config picks counts for every stage that can run the
    importing module; its siblings and stages that cannot reach that module stay blind."""
    write(package, {"pkg/arch/__init__.py": "import importlib\n"
                                            "def build(n):\n"
                                            "    return importlib.import_module(f'pkg.arch.{n}')\n",
                    "pkg/arch/one.py": "from pkg.base import X\n",
                    "pkg/arch/two.py": "W = 2\n",
                    "scripts/d.py": "from pkg.arch import build\n"})
    plain = set(Fingerprints(package, "pkg").sources(package / "scripts/d.py"))
    chosen = Fingerprints(package, "pkg", by_name={"pkg.arch": ["pkg.arch.one"]})
    assert "pkg/arch/one.py" not in plain
    got = set(chosen.sources(package / "scripts/d.py"))
    assert {"pkg/arch/one.py", "pkg/base.py"} <= got and "pkg/arch/two.py" not in got
    assert "pkg/arch/one.py" not in chosen.sources(package / "scripts/b.py")
    other = Fingerprints(package, "pkg", by_name={"pkg.arch": ["pkg.arch.two"]})
    assert other.stage(package / "scripts/d.py") != chosen.stage(package / "scripts/d.py")
    assert other.stage(package / "scripts/b.py") == chosen.stage(package / "scripts/b.py")
    with pytest.raises(ValueError, match="pkg.arch.three"):
        Fingerprints(package, "pkg", by_name={"pkg.arch": ["pkg.arch.three"]})


@pytest.mark.parametrize("name", ["small_cnn", "all_cnn_c", "resnet18"])
def test_building_a_model_loads_only_the_architecture_the_fingerprints_count(name):
    """Checked against Python: building ``name`` imports exactly the architecture modules
    that the workflow's fingerprints count for it (plan.modules_chosen_by_config)."""
    import json
    import subprocess
    import sys

    from critperiods.pipeline.plan import modules_chosen_by_config

    code = ("import json, sys; from critperiods.train.models import build_model; "
            f"build_model({name!r}, 4, 3, 32, 10, seed=0); "
            "print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('critperiods.train.models.'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    fp = Fingerprints(ROOT, by_name=modules_chosen_by_config({"model": {"name": name}}))
    counted = {p.removesuffix(".py").replace("/", ".")
               for p in fp.sources(ROOT / "scripts/train.py")
               if p.startswith("critperiods/train/models/")}
    assert loaded == counted - {"critperiods.train.models.__init__"}
    assert f"critperiods.train.models.{name}" in loaded
