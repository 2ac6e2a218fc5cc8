"""A release folder written as edits on another release's folder (`[ruleset] base = "0.33"`).

Why a module of its own: consecutive vLLM releases differ in a few dozen selection facts, and a folder
that restates four thousand lines per release turns one shared fix into one edit per release. An edit
folder holds only what changed; this module merges it into its base's tables before anything is built,
so the rest of the loader sees one complete set of files, as if the folder were a full copy.

The edit language is TOML itself, with four keys of its own (each starts with `_`, so none can be a
rules key):

- A file merges into the base's file of the same name (a new name is a new file).
- Named tables merge key by key: the top-level tables, each entry of them (`[backends.X]`, `[derived.X]`,
  `[platforms.cuda]`, ...), a backend's `variants` and each variant, a platform's `mla_prefill`. Any other
  value replaces the base's whole: a string, a list, and an inline table such as a `when`, a `require` or a
  head-size predicate (merging `{ min = 8 }` into `{ max = 256 }` would silently keep both bounds).
- An array of tables whose elements all have a unique `name` (priority lists, model routes, ...) merges
  by name: an element with a base element's name replaces it in place; a new name is appended, or put
  before the element named by its `_before`.
- `_remove = true` in a table (a backend, a derived fact) or in a named element deletes it;
  `_replace = true` replaces the base's table instead of merging into it; `_remove_keys = ["k", ...]`
  deletes keys of the base's table. Any other array of tables is replaced whole.
"""

from __future__ import annotations

from typing import Any, Callable

REMOVE, REPLACE, REMOVE_KEYS, BEFORE = "_remove", "_replace", "_remove_keys", "_before"
DIRECTIVES = (REMOVE, REPLACE, REMOVE_KEYS, BEFORE)
# The longest chain of releases edited on each other (0.31 on 0.32 on 0.33 ...): a cycle stops here.
MAX_BASE_DEPTH = 32

Problem = Callable[[str, str], None]  # (location, message): the caller adds its file name


def merge_file(base: dict[str, Any], edits: dict[str, Any], problem: Problem) -> dict[str, Any]:
    """The base file's tables with the edit file's applied (neither argument is changed). The result shares
    the tables the edits do not touch with `base` (the loader never changes a document it has read: copying
    every base table was a third of reading the releases' edit folders)."""
    return _merge_table(base, edits, "", problem)


# Keys whose table is a collection of named entries (merged entry by entry) below the top two levels.
_NAMED_BELOW = ("variants", "mla_prefill")


def _merges(where: str, key: str) -> bool:
    """Whether the table at `where`.`key` merges into the base's (a named table) or replaces it (a value)."""
    path = [*where.split("."), key] if where else [key]
    return len(path) <= 2 or key in _NAMED_BELOW or (len(path) >= 2 and path[-2] == "variants")


def _merge_table(base: dict[str, Any], edits: dict[str, Any], where: str, problem: Problem) -> dict[str, Any]:
    into = dict(base)  # this level is changed: copied; the tables below are copied only where an edit reaches
    for key in edits.get(REMOVE_KEYS, ()) if isinstance(edits.get(REMOVE_KEYS), list) else ():
        if into.pop(key, None) is None:
            problem(_at(where, REMOVE_KEYS), f"the base has no key {key!r} to remove")
    if REMOVE_KEYS in edits and not isinstance(edits[REMOVE_KEYS], list):
        problem(_at(where, REMOVE_KEYS), "must be a list of key names")
    for key, value in edits.items():
        if key in DIRECTIVES:
            if key != REMOVE_KEYS:
                problem(_at(where, key), f"{key} belongs in a table the edit changes, not at this level")
            continue
        at = _at(where, key)
        old = into.get(key)
        if isinstance(value, dict):
            if value.get(REMOVE) is True:
                if key not in into:
                    problem(at, "the base has no such table to remove")
                into.pop(key, None)
            elif value.get(REPLACE) is True or not isinstance(old, dict) or not _merges(where, key):
                into[key] = _clean(value, at, problem)
            else:
                into[key] = _merge_table(old, value, at, problem)
        elif _is_named_array(value) and _is_named_array(old):
            into[key] = _merge_named(old, value, at, problem)
        else:
            into[key] = _clean(value, at, problem)
    return into


def _merge_named(old: list[dict], edits: list[dict], where: str, problem: Problem) -> list[dict]:
    """Elements matched by `name`: replaced in place, removed, or inserted (before `_before`, else last)."""
    out = list(old)
    for element in edits:
        name = element["name"]
        at = f"{where}[{name!r}]"
        index = next((i for i, e in enumerate(out) if e["name"] == name), None)
        if element.get(REMOVE) is True:
            if index is None:
                problem(at, "the base has no element of this name to remove")
            else:
                del out[index]
            continue
        new = _clean({k: v for k, v in element.items() if k != BEFORE}, at, problem)
        if index is not None:
            if BEFORE in element:
                problem(_at(at, BEFORE), "only a new element is placed; this name replaces the base's in place")
            out[index] = new
            continue
        anchor = element.get(BEFORE)
        if anchor is None:
            out.append(new)
            continue
        place = next((i for i, e in enumerate(out) if e["name"] == anchor), None)
        if place is None:
            problem(_at(at, BEFORE), f"no element named {anchor!r} to insert before; names: "
                                     + ", ".join(repr(e["name"]) for e in out))
            out.append(new)
        else:
            out.insert(place, new)
    return out


def _is_named_array(value: Any) -> bool:
    """An array of tables whose elements all carry a distinct string `name`."""
    if not isinstance(value, list) or not value or not all(isinstance(e, dict) for e in value):
        return False
    names = [e.get("name") for e in value]
    return all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def _clean(value: Any, where: str, problem: Problem) -> Any:
    """A new value as the rules read it: edit keys are only meaningful where something is merged."""
    if isinstance(value, dict):
        for key in DIRECTIVES:
            if key in value and key != REPLACE:
                problem(_at(where, key), f"{key} has nothing to act on here (the base has no such table)")
        return {k: _clean(v, _at(where, k), problem) for k, v in value.items() if k not in DIRECTIVES}
    if isinstance(value, list):
        return [_clean(v, where, problem) for v in value]
    return value


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
