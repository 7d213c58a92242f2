"""Setting values in a YAML file (a deployment repository's values.yaml) without
rewriting it: ruamel.yaml composes the document and reports where each scalar starts
and ends; only those characters change, in the value's own quoting style.
"""

from __future__ import annotations

import json
import re

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, ScalarNode

from lightci.errors import UserError


def edit(
    original: str, sets: dict[str, str | None], remove: list[str] = ()
) -> tuple[str, dict[str, str | None]]:
    """The YAML text with the dotted paths set (None: null), and those in `remove` taken
    out; and what each path that was there held before (None: null).

    ruamel.yaml composes the document and says where each value starts and
    ends; only those characters are replaced, in the value's own quoting style,
    so every other byte (comments, order, spacing, quotes) stays as it was. A
    path the file lacks gets new lines at the end of its nearest block mapping.
    A removed path goes with its line (a rollback of a bump that added it), and
    so does a mapping it leaves empty. A value that is a YAML anchor (or reached
    through an alias) is refused: changing it would change every alias of it.
    """
    root = _compose(original)
    before: dict[str, str | None] = {}
    cuts, missing = [], []
    for path, value in sets.items():
        key, node = _find(root, path.split("."), path)
        if node is None:
            missing.append(path)
            continue
        null = node.tag.endswith(":null")
        before[path] = None if null else node.value
        if (null and value is None) or (not null and node.value == value):
            continue
        begin, end = node.start_mark.index, node.end_mark.index
        if value is None:
            text = "null"
        elif node.style in ("|", ">"):  # the block's lines go; one line ends the value
            text = json.dumps(value) + "\n"
        else:
            text = _scalar(value, node.style, _in_flow(original, begin), node.tag)
        if begin == end:  # "tag:" with no value: it goes after the colon, not on the next line
            begin = end = original.index(":", key.end_mark.index) + 1
            text = " " + text
        cuts.append((begin, end, text))
    edited = original
    for begin, end, text in sorted(cuts, reverse=True):
        edited = edited[:begin] + text + edited[end:]
    for path in missing:  # one at a time: each insertion moves what follows it
        if sets[path] is not None:
            edited = _insert(edited, path, sets[path])
    for path in remove:
        _, node = _find(_compose(edited), path.split("."), path)
        if node is not None:
            before[path] = None if node.tag.endswith(":null") else node.value
            edited = _remove(edited, path.split("."), path)
    return edited, before


def differing(text: str, expect: dict[str, str | None]) -> list[str]:
    """The paths whose value in text is not what expect says (None: null); a path that
    is gone, or no longer a plain value, differs too."""
    root = _compose(text)
    changed = []
    for path, wanted in expect.items():
        try:
            _, node = _find(root, path.split("."), path)
        except UserError:
            node = None
        null = node is not None and node.tag.endswith(":null")
        if node is None or (None if null else node.value) != wanted:
            changed.append(path)
    return changed


def _compose(text: str):
    """The document's node tree; a file YAML cannot read is the job's to fix, not a crash."""
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="rt").compose(text) if text.strip() else None
    except YAMLError as exc:
        said = " ".join(str(exc).split())
        raise UserError(f"the file is not YAML lightci can edit: {said}") from None


def _remove(text: str, keys: list[str], path: str) -> str:
    """Without the line of keys' entry; its mapping too when nothing else is left in it."""
    node = _compose(text)
    for key in keys[:-1]:
        node = next(v for k, v in node.value if k.value == key)
    if node.flow_style:
        raise UserError(f"{path} sits in a {{...}} mapping: remove it by hand")
    if len(node.value) == 1 and len(keys) > 1:
        return _remove(text, keys[:-1], path)
    key, value = next((k, v) for k, v in node.value if k.value == keys[-1])
    begin = text.rfind("\n", 0, key.start_mark.index) + 1
    end = text.find("\n", value.end_mark.index - 1 if value.end_mark.index else 0)
    return text[:begin] + text[end + 1 if end >= 0 else len(text) :]


def _insert(text: str, path: str, value: str) -> str:
    """Add path's missing keys as lines after the last entry of the deepest mapping present."""
    root = _compose(text)
    keys, node, depth = path.split("."), root, 0
    while depth < len(keys) - 1 and isinstance(node, MappingNode):
        child = next((v for k, v in node.value if k.value == keys[depth]), None)
        if child is None:
            break
        node, depth = child, depth + 1
    if not isinstance(node, MappingNode) or node.flow_style or not node.value:
        raise UserError(f"{path} is not in the file and has no block mapping to go in: add it")
    indent = node.value[0][0].start_mark.column
    at = node.value[-1][1].end_mark.index
    if text[at - 1 : at] != "\n":
        at = text.find("\n", at) + 1 or len(text)
    lines = []
    for level, key in enumerate(keys[depth:]):
        lead = " " * (indent + 2 * level)
        last = level == len(keys) - depth - 1
        lines.append(f"{lead}{key}: {_scalar(value, None, False)}" if last else f"{lead}{key}:")
    if at == len(text) and not text.endswith("\n"):
        text += "\n"
        at += 1
    return text[:at] + "\n".join(lines) + "\n" + text[at:]


def _find(node, keys: list[str], path: str):
    """(key node, scalar node) at keys; (None, None) when a key is missing; an error when it
    is not a scalar, or an anchor's (what an alias points at is the anchor's node)."""
    key = None
    for depth, name in enumerate(keys):
        if node is None:
            return None, None
        if not isinstance(node, MappingNode):
            raise UserError(f"{path}: {'.'.join(keys[:depth]) or 'the document'} is not a mapping")
        key, node = next(((k, v) for k, v in node.value if k.value == name), (None, None))
    if node is not None and not isinstance(node, ScalarNode):
        raise UserError(f"{path}: holds a mapping or a list, not a value")
    if node is not None and getattr(node, "anchor", None):
        raise UserError(
            f"{path}: its value is the YAML anchor &{node.anchor} (or an alias of "
            "it), which other keys share: set it by hand"
        )
    return key, node


def _in_flow(text: str, index: int) -> bool:
    """Whether the value sits inside { } or [ ] on its line (a plain value may not hold a comma)."""
    line = text[text.rfind("\n", 0, index) + 1 : index]
    return line.count("{") + line.count("[") > line.count("}") + line.count("]")


_PLAIN = re.compile(r"[A-Za-z0-9_./@+=][A-Za-z0-9_./@+=:-]*\Z")


_KINDS = {"int": int, "float": float, "bool": bool}


def _scalar(value: str, style: str | None, flow: bool, tag: str = "") -> str:
    """The value as YAML text in the old value's style; quoted where plain would change it,
    unless the old value was a plain number (or boolean) and so is the new one:
    `replicas: 2` set to "3" stays a number."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    plain_ok = style is None and _PLAIN.match(value) and not value.endswith(":")
    kind = _KINDS.get(tag.rsplit(":", 1)[-1]) if plain_ok else None
    if kind is not None and type(YAML(typ="safe").load(value)) is kind:
        return value
    if plain_ok and YAML(typ="safe").load(value) == value and not (flow and "," in value):
        return value
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar
