"""Code fingerprints: a hash of the source a pipeline stage runs, blind to comments and layout.

A stage script imports modules of the package, and those import others, at module level or
inside functions. The fingerprint of a stage hashes its script, every package module it can
reach and the non-Python files those modules load, so that the workflow reruns a stage
when, and only when, code it can run has changed (each rule gets it as its ``code`` param).

* **Python** files are hashed as their syntax tree without docstrings, written out field by
  field (fields that are empty are left out, so that the newer fields of a newer Python do not
  change the hash of the same source): comments, docstrings, blank lines, line breaks, quotes
  and parentheses that change nothing never count.
* **Imports** are read from the syntax tree, never from a list kept by hand: every ``import``
  and ``from … import`` anywhere in a module counts, including those inside functions
  (conservative: a lazy import may run). Relative imports are resolved. Importing ``a.b``
  also runs ``a/__init__.py``, whose module-level imports then count too; the imports inside
  its functions count only where a module binds the package itself (``import a``,
  ``from a import name`` of something that is not a submodule), since nothing else can call
  them.
* **Other files** a module loads count when the module names them in a string literal and
  they sit beside it (``native.py`` names ``"max_pool2.c"``). C and C++ sources are hashed
  without comments, leading and trailing blanks of a line, or empty lines; other files as
  they are.

* **Imports by a computed name** (``importlib.import_module(name)``) cannot be read from
  the tree; where the name comes from the config, the workflow says which module it is
  (``by_name``: the architecture ``model.name`` picks, for the models package). A stage
  that can run the importing module then counts the chosen one too, and none of its
  siblings.

Not seen: other computed imports, files opened by a computed path, and code outside the
package (other libraries: their versions are in the cube's attributes).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FORMAT = "critperiods-code/1"
DIGITS = 12  # hex digits of a fingerprint, as for the training-config hash
C_SUFFIXES = {".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cuh"}
_C_TOKENS = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


class _Reader:
    """One pass over a syntax tree: its text without docstrings or positions (empty fields
    left out), its import statements (and whether each runs at import time), and its string
    literals."""

    def __init__(self) -> None:
        self.imports: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
        self.strings: set[str] = set()

    def text(self, node: object, in_function: bool = False) -> str:
        if isinstance(node, list):
            return "[" + ",".join([self.text(v, in_function) for v in node]) + "]"
        if not isinstance(node, ast.AST):
            if isinstance(node, str):
                self.strings.add(node)
            return repr(node)
        if isinstance(node, ast.Import | ast.ImportFrom):
            self.imports.append((node, not in_function))
        inner = in_function or isinstance(node, _FUNCTIONS)
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if (name == "body" and isinstance(node, _DOCUMENTED) and value
                    and _is_docstring(value[0])):
                value = value[1:]
            if value is None or value == [] or name == "type_comment":
                continue
            fields.append(name + "=" + self.text(value, inner))
        return type(node).__name__ + "(" + ",".join(fields) + ")"


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_docstring(node: ast.AST) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str))


def canonical(tree: ast.AST) -> str:
    """A syntax tree as text: node types and non-empty fields, without docstrings or
    positions."""
    return _Reader().text(tree)


def source_digest(source: str, filename: str = "<source>") -> str:
    """Hash of Python source: the same for sources that differ only in comments, docstrings
    or layout."""
    return hashlib.sha256(canonical(ast.parse(source, filename)).encode()).hexdigest()


def c_text(source: str) -> str:
    """C source without comments, leading/trailing blanks of a line or empty lines."""
    def keep_literals(m: re.Match) -> str:
        token = m.group(0)
        return token if token[0] in "\"'" else " "

    lines = (line.strip() for line in _C_TOKENS.sub(keep_literals, source).splitlines())
    return "\n".join(line for line in lines if line)


def file_digest(path: Path) -> str:
    """Hash of a non-Python file a module loads (C sources without comments and blanks)."""
    if path.suffix in C_SUFFIXES:
        return hashlib.sha256(c_text(path.read_text()).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class _Ref:
    """A package module an import reaches; ``whole``: every import in it counts, not only
    its module-level ones."""

    module: str
    whole: bool


@dataclass(frozen=True)
class _Source:
    path: Path
    digest: str
    refs: tuple[_Ref, ...]  # from every import statement
    top_refs: tuple[_Ref, ...]  # from imports that run when the module is imported
    files: tuple[Path, ...]  # non-Python files it names


class Fingerprints:
    """Fingerprints of stage scripts against the package ``root/<package>`` (parsed once per
    file, so computing those of every rule costs one parse of each module).

    ``by_name``: module → the package modules it imports by a computed name in this
    workflow (each must exist; ValueError otherwise).
    """

    def __init__(self, root: str | Path, package: str = "critperiods",
                 by_name: Mapping[str, Iterable[str]] | None = None) -> None:
        self.root = Path(root).resolve()
        self.package = package
        self.by_name = {k: tuple(v) for k, v in (by_name or {}).items()}
        for module in (m for chosen in self.by_name.values() for m in chosen):
            if self.module_path(module) is None:
                raise ValueError(f"{module} is not a module of {self.root / package}")
        self._sources: dict[Path, _Source] = {}
        self._files: dict[Path, str] = {}

    # -------------------------------------------------------------------- modules

    def module_path(self, name: str) -> Path | None:
        """The file of package module ``name`` (dotted), or None if it is not one."""
        parts = name.split(".")
        if parts[0] != self.package:
            return None
        base = self.root.joinpath(*parts)
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def _module_name(self, path: Path) -> str | None:
        """Dotted name of a file inside the package; None for a file outside (a script)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        if rel.parts[0] != self.package:
            return None
        parts = list(rel.with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def _refs(self, node: ast.Import | ast.ImportFrom, current: str | None,
              is_package: bool) -> list[_Ref]:
        """The package modules one import statement runs or binds."""
        refs: list[_Ref] = []

        def parents(name: str, whole: bool) -> None:
            parts = name.split(".")
            refs.extend(_Ref(".".join(parts[:i]), whole) for i in range(1, len(parts)))

        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import a.b` binds `a`, through which all of a.b is reachable
                parents(alias.name, alias.asname is None)
                refs.append(_Ref(alias.name, True))
            return [r for r in refs if self.module_path(r.module)]
        if node.level:
            if current is None:
                return []
            anchor = current.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if self.module_path(base) is None:
            return []
        parents(base, False)
        attributes = False
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and self.module_path(sub):
                refs.append(_Ref(sub, True))
            else:
                attributes = True
        refs.append(_Ref(base, attributes))
        return [r for r in refs if self.module_path(r.module)]

    def _source(self, path: Path) -> _Source:
        path = path.resolve()
        if path not in self._sources:
            reader = _Reader()
            text = reader.text(ast.parse(path.read_text(), str(path)))
            name = self._module_name(path)
            refs, top = [], []
            for node, at_import in reader.imports:
                found = self._refs(node, name, path.name == "__init__.py")
                refs.extend(found)
                if at_import:
                    top.extend(found)
            files = sorted(path.parent / s for s in reader.strings
                           if _names_a_file(path.parent, s))
            self._sources[path] = _Source(path, hashlib.sha256(text.encode()).hexdigest(),
                                          tuple(refs), tuple(top), tuple(files))
        return self._sources[path]

    # -------------------------------------------------------------------- stages

    def sources(self, script: str | Path) -> dict[str, str]:
        """``{path relative to root: digest}`` of ``script`` and everything it can run."""
        script = Path(script).resolve()
        found = {script: self._source(script).digest}
        whole: set[str] = set()
        top_only: set[str] = set()
        queue = [r for r in self._source(script).refs]
        while queue:
            ref = queue.pop()
            if ref.module in whole or (not ref.whole and ref.module in top_only):
                continue
            (whole if ref.whole else top_only).add(ref.module)
            source = self._source(self.module_path(ref.module))
            found[source.path] = source.digest
            for extra in source.files:
                if extra not in self._files:
                    self._files[extra] = file_digest(extra)
                found[extra] = self._files[extra]
            queue.extend(source.refs if ref.whole else source.top_refs)
            queue.extend(_Ref(m, True) for m in self.by_name.get(ref.module, ()))
        return {_relative(p, self.root): d for p, d in sorted(found.items())}

    def stage(self, script: str | Path) -> str:
        """The fingerprint of a stage script: a hash over :meth:`sources`."""
        text = "\n".join([FORMAT, *(f"{p} {d}" for p, d in self.sources(script).items())])
        return hashlib.sha256(text.encode()).hexdigest()[:DIGITS]


def _names_a_file(folder: Path, value: str) -> bool:
    """Whether a string literal names a non-Python file in ``folder``."""
    if not value or len(value) > 200 or "\0" in value or value.startswith(("/", "~")):
        return False
    candidate = folder / value
    return candidate.suffix not in {".py", ".pyc", ""} and candidate.is_file()


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


__all__ = ["Fingerprints", "c_text", "canonical", "file_digest", "source_digest"]
