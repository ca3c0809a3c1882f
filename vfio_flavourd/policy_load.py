"""Reading and validating policy files.

Validation works on the YAML node tree, not on the loaded Python objects, so
that every problem can name the file, line and column it is at.  It collects
every problem in every file before reporting, and a broken policy never
yields rules.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from .errors import PolicyError
from .modprobe import normalise_module, valid_module_name
from .policy import FLAVOURS, GROUP_MODES, ClassPrefix, Match, Policy, PolicyFile, Rule
from .policy_files import discover  # noqa: F401  (re-exported: commands use it)
from .policy_yaml import compose
from .safeio import read_text

# Whole-string patterns, used with fullmatch: "$" also matches before a
# final newline, so `name: "gpus\n"` passed the old checks.
RULE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+-]*")
ADDRESS_GLOB_RE = re.compile(r"[0-9a-fA-F:.*?\[\]!-]+")
HEX_ID_RE = re.compile(r"(0[xX])?[0-9a-fA-F]{1,4}")
CLASS_RE = re.compile(r"(0[xX])?([0-9a-fA-F]{2}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6})")

TOP_KEYS = ("version", "rules")
MATCH_KEYS = ("vendor", "device", "subsystem_vendor", "subsystem_device", "class",
              "address", "physfn", "virtfn", "driver")
RULE_KEYS = ("name", "description", "match", "flavour", "prefer", "deny", "variants",
             "fallback", "force", "takeover", "upgrade", "group",
             "sriov_drivers_autoprobe", "allow_new_id", "unbind_timeout")
BOOL_RULE_KEYS = ("variants", "force", "takeover", "upgrade", "sriov_drivers_autoprobe",
                  "allow_new_id")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


def _found(node) -> str:
    if isinstance(node, yaml.ScalarNode):
        if node.tag.endswith(":null"):
            return "nothing"
        return repr(node.value) if node.style else node.value
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a mapping"


class _Checker:
    """Validates one file's node tree, appending Problems."""

    _bools = yaml.SafeLoader  # only for its bool resolution table

    def __init__(self, path: str, problems: list):
        self.path = path
        self.problems = problems
        # YAML aliases make one node appear many times; each is checked,
        # and its problems reported, once (250 references to a mapping of
        # 2,000 bad keys made half a million lines).
        self._done: dict = {}

    def _once(self, kind: str, node, check):
        key = (kind, id(node))
        if key not in self._done:
            self._done[key] = check()
        return self._done[key]

    def problem(self, node, key, message):
        mark = node.start_mark if node is not None else None
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        self.problems.append(Problem(self.path, line, col, key, message))

    def mapping(self, node, key, known) -> dict:
        """{name: (key_node, value_node)}; reports non-mappings, unknown and
        duplicate keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, key, f"expected a mapping, found {_found(node)}")
            return {}
        out = {}
        for knode, vnode in node.value:
            name = knode.value if isinstance(knode, yaml.ScalarNode) else None
            where = f"{key}.{name}" if key else str(name)
            if name not in known:
                hint = difflib.get_close_matches(str(name), known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.problem(knode, where, f"unknown key{extra}; expected one of: "
                             + ", ".join(known))
            elif name in out:
                first = out[name][0].start_mark.line + 1
                self.problem(knode, where, f"duplicate key (first given on line {first})")
            else:
                out[name] = (knode, vnode)
        return out

    def boolean(self, node, key) -> Optional[bool]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":bool"):
            return node.value.lower() in ("true", "yes", "on", "y")
        self.problem(node, key, f"expected true or false, found {_found(node)}")
        return None

    def string(self, node, key) -> Optional[str]:
        # The raw text, whatever YAML 1.1 would type it as: an unquoted
        # 0000:03:00.0 is a sexagesimal float to YAML, an address to us.
        if (isinstance(node, yaml.ScalarNode) and node.value
                and not node.tag.endswith((":null", ":bool"))):
            return node.value
        self.problem(node, key, f"expected a string, found {_found(node)}")
        return None

    def items(self, node, key) -> list:
        """A scalar or a non-empty list of scalars, as [(node, key)]."""
        if isinstance(node, yaml.SequenceNode):
            if not node.value:
                self.problem(node, key, "expected at least one item, found an empty list")
            return [(n, f"{key}[{i}]") for i, n in enumerate(node.value)]
        return [(node, key)]

    def hex_id(self, node, key) -> Optional[int]:
        # The raw text decides, not YAML's typing: ids are hexadecimal as
        # lspci and sysfs print them, so 1041 and "1041" both mean 0x1041.
        if isinstance(node, yaml.ScalarNode) and HEX_ID_RE.fullmatch(node.value):
            return int(node.value, 16)
        self.problem(node, key, "expected a 16-bit hex id such as 0x15b3 or \"15b3\", "
                     f"found {_found(node)}")
        return None

    def class_prefix(self, node, key) -> Optional[ClassPrefix]:
        m = CLASS_RE.fullmatch(node.value) if isinstance(node, yaml.ScalarNode) else None
        if m:
            return ClassPrefix(int(m.group(2), 16), len(m.group(2)))
        self.problem(node, key, "expected 2, 4 or 6 hex digits (class, class+subclass, "
                     f"class+subclass+prog-if) such as \"0200\", found {_found(node)}")
        return None

    def glob(self, node, key, address_like: bool) -> Optional[str]:
        text = self.string(node, key)
        if text is None:
            return None
        if address_like and not ADDRESS_GLOB_RE.fullmatch(text):
            self.problem(node, key, "expected a PCI address or glob such as \"0000:3b:*\", "
                         f"found {_found(node)}")
            return None
        return text.lower() if address_like else text

    def module(self, node, key, allow_none=False) -> Optional[str]:
        text = self.string(node, key)
        if text is None:
            return None
        if allow_none and text == "none":
            return "none"
        if not valid_module_name(text):
            self.problem(node, key, "expected a module name (letters, digits, '_' and '-'), "
                         f"found {_found(node)}")
            return None
        return normalise_module(text)

    def list_of(self, node, key, each) -> Optional[tuple]:
        return self._once(f"list:{key.rpartition('.')[2]}", node,
                          lambda: self._list_of(node, key, each))

    def _list_of(self, node, key, each) -> Optional[tuple]:
        values = [each(n, k) for n, k in self.items(node, key)]
        if any(v is None for v in values) or not values:
            return None
        return tuple(values)

    def match(self, node, key) -> Optional[Match]:
        return self._once("match", node, lambda: self._match(node, key))

    def _match(self, node, key) -> Optional[Match]:
        keys = self.mapping(node, key, MATCH_KEYS)
        if isinstance(node, yaml.MappingNode) and not node.value:
            self.problem(node, key, "expected at least one key: a rule must say which "
                         "devices it claims")
            return None
        kw, ok = {}, True
        for name, (_, vnode) in keys.items():
            where = f"{key}.{name}"
            if name in ("vendor", "device", "subsystem_vendor", "subsystem_device"):
                value = self.list_of(vnode, where, self.hex_id)
            elif name == "class":
                value = self.list_of(vnode, where, self.class_prefix)
                name = "class_"
            elif name in ("address", "physfn"):
                value = self.list_of(vnode, where, lambda n, k: self.glob(n, k, True))
            elif name == "driver":
                value = self.list_of(vnode, where, lambda n, k: self.glob(n, k, False))
            else:  # virtfn
                value = self.boolean(vnode, where)
            ok = ok and value is not None
            kw[name] = value
        return Match(**kw) if ok and keys else None

    def seconds(self, node, key) -> Optional[float]:
        """A number of seconds, more than 0 and at most a day."""
        if isinstance(node, yaml.ScalarNode) and (node.tag.endswith(":int")
                                                  or node.tag.endswith(":float")):
            try:
                value = float(node.value)
            except ValueError:
                value = None
            if value is not None and 0 < value <= 86400:
                return value
        self.problem(node, key, f"expected a number of seconds (more than 0, at most 86400), "
                     f"found {_found(node)}")
        return None

    def rule(self, node, key) -> Optional[Rule]:
        return self._once("rule", node, lambda: self._rule(node, key))

    def _rule(self, node, key) -> Optional[Rule]:
        keys = self.mapping(node, key, RULE_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return None
        kw, ok = {}, True
        for required in ("name", "match", "flavour"):
            if required not in keys:
                self.problem(node, key, f"missing required key '{required}'")
                ok = False
        for name, (_, v) in keys.items():
            where = f"{key}.{name}"
            if name == "name":
                value = self.string(v, where)
                if value is not None and not RULE_NAME_RE.fullmatch(value):
                    self.problem(v, where, "expected a name of letters, digits and "
                                 f"'_.:@+-', found {_found(v)}")
                    value = None
            elif name == "description":
                value = self.string(v, where)
            elif name == "match":
                value = self.match(v, where)
            elif name == "flavour":
                value = self.string(v, where)
                if value is not None and value not in FLAVOURS:
                    self.problem(v, where, f"expected one of {', '.join(FLAVOURS)}, "
                                 f"found {_found(v)}")
                    value = None
            elif name in ("prefer", "deny"):
                value = self.list_of(v, where, self.module)
            elif name == "fallback":
                value = self.module(v, where, allow_none=True)
            elif name == "group":
                value = self.string(v, where)
                if value is not None and value not in GROUP_MODES:
                    self.problem(v, where, f"expected one of {', '.join(GROUP_MODES)}, "
                                 f"found {_found(v)}")
                    value = None
            elif name == "unbind_timeout":
                value = self.seconds(v, where)
            else:
                value = self.boolean(v, where)
            ok = ok and value is not None
            kw[name] = value
        if not ok:
            return None
        if kw.get("fallback") == "none":
            kw["fallback"] = None
        line = node.start_mark.line + 1
        return Rule(origin=f"{self.path}:{line}", **kw)

    def document(self, node) -> list:
        """Rules of one file, or [] with problems recorded."""
        if node is None:
            return []
        keys = self.mapping(node, "", TOP_KEYS)
        if not isinstance(node, yaml.MappingNode):
            return []
        if "version" not in keys:
            self.problem(node, "version", "missing; expected 'version: 1' at the top")
        else:
            v = keys["version"][1]
            if not (isinstance(v, yaml.ScalarNode) and v.tag.endswith(":int") and v.value == "1"):
                self.problem(v, "version", f"expected 1, found {_found(v)}")
        if "rules" not in keys:
            return []
        rnode = keys["rules"][1]
        if isinstance(rnode, yaml.ScalarNode) and rnode.tag.endswith(":null"):
            return []
        if not isinstance(rnode, yaml.SequenceNode):
            self.problem(rnode, "rules", f"expected a list of rules, found {_found(rnode)}")
            return []
        return [self.rule(n, f"rules[{i}]") for i, n in enumerate(rnode.value)]


def parse_file(path: Path, problems: list, display: Optional[str] = None) -> list:
    """The rules of one policy file (None entries for invalid rules)."""
    shown = display or str(path)
    try:
        text = read_text(path)
    except UnicodeDecodeError as e:
        problems.append(Problem(shown, 1, 1, "", f"not UTF-8 text ({e.reason})"))
        return []
    except OSError as e:
        problems.append(Problem(shown, 1, 1, "", f"cannot read: {e.strerror}"))
        return []
    try:
        node = compose(text)
    except RecursionError:
        # compose_node recurses once per level; the depth cap below stops
        # this first, but a small stack (a thread) must not crash us either.
        problems.append(Problem(shown, 1, 1, "", "YAML nested too deeply"))
        return []
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(x for x in (e.context, e.problem) if x)
        problems.append(Problem(shown, line, col, "", f"YAML syntax error: {what}"))
        return []
    except yaml.YAMLError as e:
        problems.append(Problem(shown, 1, 1, "", f"YAML error: {e}"))
        return []
    return _Checker(shown, problems).document(node)


def load(files) -> Policy:
    """Parse and validate PolicyFiles into one Policy, or raise PolicyError
    with every problem found across all of them."""
    problems, rules, seen = [], [], {}
    for pf in files:
        if pf.disabled:
            continue
        for rule in parse_file(pf.path, problems):
            if rule is None:
                continue
            if rule.name in seen:
                file, _, line = rule.origin.rpartition(":")
                problems.append(Problem(file, int(line), 1, "name",
                                        f"duplicate rule name '{rule.name}' (first defined "
                                        f"at {seen[rule.name]})"))
                continue
            seen[rule.name] = rule.origin
            rules.append(rule)
    if problems:
        raise PolicyError(_first(problems), total=len(problems))
    return Policy(rules=rules, files=list(files))


MAX_SHOWN = 100


class _More:
    """Stands for the problems not shown."""

    def __init__(self, n: int):
        self.n = n

    def __str__(self) -> str:
        return f"... and {self.n} more problem{'s' if self.n != 1 else ''} not shown"


def _first(problems: list) -> list:
    if len(problems) <= MAX_SHOWN:
        return problems
    return problems[:MAX_SHOWN] + [_More(len(problems) - MAX_SHOWN)]


def load_policy(root, paths=None) -> Policy:
    """The policy in force: the given files, or the layered search path."""
    if paths:
        files = [PolicyFile(Path(p), "command line") for p in paths]
    else:
        files = discover(root.policy_dirs())
    return load(files)
