"""The plain command lines, parsed without argparse.

Importing argparse, and the formatter it builds for every add_argument
(shutil, locale, gettext, re behind it), cost more than the interpreter's
own start: a one-shot command such as `apply ADDRESS` or `status` paid for
it on every run.  This parses the command lines people and scripts
actually type, from the very add_argument() calls the parser is built
from, and says None to anything else (help, --version, abbreviations,
errors, "--", an argument it does not model), which then goes to argparse
as before, so usage, help and error messages stay argparse's.
"""

from __future__ import annotations

_ACTIONS = (None, "store", "store_true", "append")
_NARGS = (None, "*", "+")
_KEYS = {"action", "nargs", "default", "choices", "metavar", "help", "dest", "type"}


class Spec:
    """One add_argument() call, as far as this module understands it."""

    __slots__ = ("flags", "dest", "action", "nargs", "default", "choices", "type")

    def __init__(self, flags, kw):
        self.flags = flags
        self.action = kw.get("action")
        self.nargs = kw.get("nargs")
        self.choices = kw.get("choices")
        self.type = kw.get("type")
        if flags[0].startswith("-"):
            long = [f for f in flags if f.startswith("--")] or flags
            self.dest = kw.get("dest") or long[0].lstrip("-").replace("-", "_")
            default = False if self.action == "store_true" else None
        else:
            self.dest = flags[0]
            default = [] if self.nargs == "*" else None
        self.default = kw.get("default", default)


class Recorder:
    """Stands in for an argparse parser in add_arguments(p): records what
    it can parse, and marks itself unsupported on anything else."""

    def __init__(self):
        self.specs: list = []
        self.supported = True

    def add_argument(self, *flags, **kw):
        action, nargs = kw.get("action"), kw.get("nargs")
        if not flags or set(kw) - _KEYS or action not in _ACTIONS or nargs not in _NARGS \
                or (flags[0].startswith("-") and nargs is not None) \
                or (action == "store_true" and ("choices" in kw or "type" in kw)) \
                or ("type" in kw and not flags[0].startswith("-")):
            self.supported = False
        else:
            self.specs.append(Spec(flags, kw))

    def __getattr__(self, name):
        # add_mutually_exclusive_group, set_defaults, ...: argparse's job.
        self.supported = False
        return lambda *a, **k: self


def parse(global_specs, command: str, command_specs, argv) -> dict | None:
    """{dest: value} for `argv` (global options, `command`, its arguments),
    or None when argparse should parse it."""
    values = {s.dest: (list(s.default) if isinstance(s.default, list) else s.default)
              for s in (*global_specs, *command_specs)}
    values["command"] = command
    options = {f: s for s in global_specs for f in s.flags}
    positionals = []
    words = list(argv)
    i, seen_command, run_ended = 0, False, False
    while i < len(words):
        w = words[i]
        i += 1
        if not seen_command and w == command:
            seen_command = True
            options = {f: s for s in command_specs if s.flags[0].startswith("-")
                       for f in s.flags}
            continue
        if w.startswith("-") and w != "-":
            name, eq, value = w.partition("=")
            spec = options.get(name)
            if spec is None or (eq and spec.action == "store_true"):
                return None
            if positionals:
                run_ended = True
            if spec.action == "store_true":
                values[spec.dest] = True
                continue
            if not eq:
                if i >= len(words) or words[i].startswith("-"):
                    return None
                value = words[i]
                i += 1
            if spec.choices is not None and value not in spec.choices:
                return None
            if spec.type is not None:
                try:
                    value = spec.type(value)
                except Exception:   # argparse words the error
                    return None
            if spec.action == "append":
                values[spec.dest].append(value)
            else:
                values[spec.dest] = value
            continue
        # argparse takes one run of positionals; it rejects a second run
        # after an option, so leave that to it.
        if not seen_command or run_ended:
            return None
        positionals.append(w)
    return _positionals(values, command_specs, positionals) if seen_command else None


def _positionals(values: dict, specs, words) -> dict | None:
    pos = [s for s in specs if not s.flags[0].startswith("-")]
    if not pos:
        return values if not words else None
    if len(pos) > 1:
        return None
    s = pos[0]
    if s.choices is not None and any(w not in s.choices for w in words):
        return None
    if s.nargs is None:
        if len(words) != 1:
            return None
        values[s.dest] = words[0]
    elif s.nargs == "+" and not words:
        return None
    elif words or s.nargs == "+":
        values[s.dest] = list(words)
    return values
