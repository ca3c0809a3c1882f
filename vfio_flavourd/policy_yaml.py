"""Composing a policy file's YAML into nodes, within bounds.

The checker works on the node tree (for file:line:column in every
problem).  This composer refuses what no policy needs and what would cost
the tool its stack or its time: deep nesting and floods of aliases.
"""

from __future__ import annotations

import yaml

# A policy is four levels deep (rules, a rule, match, a list); 500 levels
# blew Python's recursion limit inside PyYAML's composer.
MAX_DEPTH = 32
MAX_ALIASES = 10000


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses documents nested deeper than
    MAX_DEPTH, with the line of the node that went too deep."""

    def compose_document(self):
        self._depth = self._aliases = 0
        return super().compose_document()

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self.check_event(yaml.AliasEvent):
                # Composing shares aliased nodes and the checker visits each
                # once, so even a "billion laughs" costs little; this bounds
                # the rest of the work such a document can ask for.
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise yaml.composer.ComposerError(
                        None, None, f"more than {MAX_ALIASES} aliases",
                        self.peek_event().start_mark)
            if self._depth > MAX_DEPTH and not self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose(text: str):
    """The node tree of one YAML document (None when empty)."""
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()
