"""A config checked against the JSON schema with one clear error, before Snakemake's own
validation (which fills in the defaults but reports a bad key with the whole schema).

The error names the key as a dotted path (``grid.batch_sizes[0]``), says what is wrong, the
file that sets it and, for an unknown key, the known key it most resembles. Only the
Snakefile and the command line use this module; no stage imports it, so changing it reruns
nothing.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from critperiods.pipeline.plan import ConfigError

__all__ = ["check_against_schema", "check_layers", "exit_on_config_error", "read_config_file"]


def read_config_file(path: str | Path) -> dict:
    """One YAML config file as a dict, or a :class:`ConfigError` naming the file and why."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        text = path.read_text()
        if (document := yaml.compose(text, Loader=yaml.SafeLoader)) is not None:
            _refuse_repeated_keys(document)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err.reason} at byte {err.start}); a "
                          "config file is YAML text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: "
                          f"{getattr(err, 'problem', None) or err}") from None
    if data is None:  # Snakemake refuses it too, without naming the file
        raise ConfigError(f"{path}: empty (no keys); a config file holds a mapping of keys")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, got "
                          f"{type(data).__name__}")
    return data


#: Keys that replace others of their section when given (``section: (key, replaced…)``).
REPLACING = {"checkpoints": ("epochs", "every"), "llc": ("epochs", "every", "first_epoch")}


def check_layers(files: Sequence[str | Path]) -> None:
    """Refuse a config file given without the files its ``laid_over`` names (by file name,
    in that order, before it): laid alone, an overlay such as
    ``configs/fmnist_study_recovery_cpu.yaml`` is another experiment under its name. A
    :class:`ConfigError` names the file, what it needs and the command line that lays it.

    Also refuse a file that sets a key beside the key that replaces it
    (:data:`REPLACING`: ``llc.epochs`` with ``llc.every``), where one would be dropped
    unsaid; across files that is how an overlay replaces its base's choice."""
    names = [Path(f).name for f in files]
    for i, path in enumerate(files):
        _refuse_replaced_keys(path)
        needed = read_config_file(path).get("laid_over") or []
        if not isinstance(needed, list):
            continue  # the schema names the bad value
        wrong = [n for n in map(str, needed) if "/" in n or n == names[i]]
        if wrong:
            raise _located(f"laid_over: {path} names {', '.join(wrong)}: give the file names "
                           "of the configs it is laid over, not paths, and not its own")
        before, found = names[:i], []
        for name in map(str, needed):
            at = before.index(name) if name in before else -1
            if at < 0 or (found and at < found[-1]):
                raise _located(
                    f"laid_over: {path} is to be laid over {', '.join(needed)}"
                    f"{', in that order,' if len(needed) > 1 else ''} "
                    f"but {'that order was not kept' if at >= 0 else f'{name} was not given'} "
                    f"before it (given: {' + '.join(names)}); run it as "
                    f"--configfile {' '.join(_found_beside(n, path, files) for n in needed)} "
                    f"{path}")
            found.append(at)


def _refuse_replaced_keys(path: str | Path) -> None:
    """A :class:`ConfigError` where ``path`` sets a key of :data:`REPLACING` and one it
    replaces."""
    for section, (key, *replaced) in REPLACING.items():
        given = read_config_file(path).get(section)
        if not isinstance(given, dict) or given.get(key) is None:
            continue
        if both := [name for name in replaced if name in given]:
            raise _located(
                f"{section}.{key}: {path} sets it beside "
                f"{' and '.join(f'{section}.{name}' for name in both)}, which "
                f"it replaces (so {'they are' if len(both) > 1 else 'it is'} ignored); keep one")


#: The repository's configs (where the overlays' bases ship).
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _found_beside(name: str, overlay: str | Path, given: Sequence[str | Path] = ()) -> str:
    """Where the config ``name`` that ``overlay`` is laid over lies: a file of that name among
    those ``given`` (in the wrong order), else beside the overlay, else in the repository's
    configs/ (a copied overlay's base stays there), else just its name."""
    for path in given:
        if Path(path).name == name:
            return str(path)
    for folder in (Path(overlay).parent, CONFIGS):
        if (folder / name).is_file():
            return str(folder / name)
    return name


def _located(message: str) -> ConfigError:
    """A :class:`ConfigError` whose message already names the file."""
    err = ConfigError(message)
    err.located = True
    return err


def _refuse_repeated_keys(node: yaml.Node, seen: set[int] | None = None) -> None:
    """Raise a YAML error for a key given twice in one mapping of the composed document
    (plain YAML keeps the last and drops the first without a word), before anything is built:
    merge keys (``<<: *anchor``) are no keys, and a merged mapping's pairs are not counted
    against the mapping that merges them."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: the anchored node was checked where it stands
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[object, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a name, not a list or mapping",
                    key_node.start_mark)
            key = (key_node.tag, key_node.value)
            if key in lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key_node.value!r} is given twice (first on line "
                    f"{lines[key]})", key_node.start_mark)
            lines[key] = key_node.start_mark.line + 1
            _refuse_repeated_keys(value_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_repeated_keys(item, seen)


def _dotted(path: Sequence[object]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "(top level)"


def _file_setting(key: Sequence[object], files: Sequence[str | Path]) -> str | None:
    """The last of ``files`` that sets ``key`` (later files override earlier ones)."""
    for path in reversed(files):
        try:
            node: object = read_config_file(path)
        except ConfigError:
            continue
        for part in key:
            in_dict = isinstance(node, dict) and part in node
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if not (in_dict or in_list):
                break
            node = node[part]
        else:
            return str(path)
    return None


def _reasons(error) -> list[tuple[list[object], str]]:
    """The key paths and reasons of one schema error: one per unknown key for an
    ``additionalProperties`` error (each with the known key it most resembles, or the list of
    known keys), else the error's own path and message."""
    key = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        out = []
        for name in [k for k in error.instance if k not in known]:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = (f"; did you mean {_dotted([*key, close[0]])}?" if close
                    else "" if out else f"; the keys here are {', '.join(known)}")
            out.append(([*key, name], "unknown key" + hint))
        return out
    if error.validator == "type" and error.instance is None:  # "grid:" with nothing after it
        return [(key, f"empty, but must be of type {error.validator_value!r} (give it a value, "
                      "or delete the key for its default)")]
    if (error.validator == "type" and isinstance(error.instance, str)
            and _NUMBER_AS_TEXT.match(error.instance.strip())):
        return [(key, f"{error.message} (YAML reads {error.instance} as text: write it with a "
                      "decimal point and a signed exponent, e.g. 1.0e-3)")]
    return [(key, error.message)]


#: What YAML 1.1 (PyYAML) reads as a string though it looks like a number: 1e-3, 5E4.
_NUMBER_AS_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _non_finite(node: object, key: tuple[object, ...] = ()
                ) -> Iterator[tuple[tuple[object, ...], float]]:
    """``(key, value)`` for each value of ``node`` that is a float NaN or infinite."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _non_finite(value, (*key, name))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _non_finite(value, (*key, i))
    elif isinstance(node, float) and not math.isfinite(node):
        yield key, node


#: At most this many further reasons follow the first on the error's line.
MORE_REASONS = 3


def check_against_schema(config: dict, schema: str | Path,
                         files: Sequence[str | Path] = ()) -> None:
    """Raise :class:`ConfigError` for the most relevant way ``config`` breaks ``schema`` (a
    YAML JSON-schema file), naming the key, the reason and which of ``files`` sets it.

    Further reasons follow on the same line (``; also <key>: <reason>``, at most
    :data:`MORE_REASONS`, then ``; and N more``): the other unknown keys beside an unknown
    key, and the other errors in the same section (for a list item, the same list), so that
    a list both too short and holding a bad value gets both reasons, and a section with two
    bad values both."""
    for key, value in _non_finite(config):  # the schema's "number" takes .nan and .inf
        where = _file_setting(list(key), files)
        err = ConfigError(f"{_dotted(key)}: {value} is not a finite number"
                          + (f" (set in {where})" if where else ""))
        err.located = True
        raise err
    rules = yaml.safe_load(Path(schema).read_text())
    errors = list(Draft202012Validator(rules).iter_errors(config))
    best = best_match(errors)
    if best is None:
        return
    (key, reason), *siblings = _reasons(best)
    first = f"{_dotted(key)}: {reason}"
    also = [f"{_dotted(k)}: {r}" for k, r in siblings]
    scope = key[:-1] if len(key) > 1 else key  # a list item: its list; a key: its section
    for other in errors:
        for other_key, other_reason in ([] if other is best else _reasons(other)):
            line = f"{_dotted(other_key)}: {other_reason}"
            if other_key[:len(scope)] == scope and line != first and line not in also:
                also.append(line)
    where = _file_setting(key, files)
    more = len(also) - MORE_REASONS
    err = ConfigError(first + (f" (set in {where})" if where else "")
                      + "".join(f"; also {line}" for line in also[:MORE_REASONS])
                      + (f"; and {more} more" if more > 0 else ""))
    err.located = True  # the file was looked up: exit_on_config_error adds none
    raise err


def _key_of(message: str) -> list[object] | None:
    """The dotted key a :class:`ConfigError` message starts with, as path parts
    (``grid.batch_sizes[0]`` → ``["grid", "batch_sizes", 0]``), or None."""
    match = re.match(r"([A-Za-z_][\w.]*(?:\[\d+\])*): ", message)
    if match is None:
        return None
    parts: list[object] = []
    for name, index in re.findall(r"([A-Za-z_]\w*)|\[(\d+)\]", match.group(1)):
        parts.append(name if name else int(index))
    return parts


@contextlib.contextmanager
def exit_on_config_error(files: Sequence[str | Path] = ()) -> Iterator[None]:
    """For the Snakefile: a :class:`ConfigError` raised inside ends Snakemake with its message
    on one line (``critperiods: config error: <key>: <reason> (set in <file>)``) and exit
    status 1, without a traceback, where Snakemake would print its frames. The file of
    ``files`` that sets the key is added where the message does not name one."""
    try:
        yield
    except ConfigError as err:
        message = str(err)
        key = _key_of(message)
        where = _file_setting(key, files) if key and not err.located else None
        others = [] if err.located else _other_keys_set(message, key, where, files)
        said = "; ".join([*([f"set in {where}"] if where else []), *others])
        sys.exit(f"critperiods: config error: {message}" + (f" ({said})" if said else ""))


def _other_keys_set(message: str, key: Sequence[object] | None, where: str | None,
                    files: Sequence[str | Path]) -> list[str]:
    """"<key> set in <file>" for the other keys a cross-key error names with their values
    ("… larger than dataset.train_subset=32") that a file other than ``where`` sets: the
    two files that disagree, not one."""
    out = []
    for name in dict.fromkeys(re.findall(r"\b([a-z_]+(?:\.[a-z_]+)*)=", message)):
        parts = name.split(".")
        if parts == list(key or ()):
            continue
        other = _file_setting(parts, files)
        if other is not None and other != where:
            out.append(f"{name} set in {other}")
    return out
