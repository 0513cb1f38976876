"""YAML as rules and field maps are read: PyYAML's safe loader, with duplicate keys refused."""

from __future__ import annotations

import yaml

# libyaml's parser when PyYAML was built with it (it is in the wheels): same safe
# constructor, a fraction of the start-up time.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeyLoader(SAFE_LOADER):
    """PyYAML's safe loader, but a key given twice is an error: silently keeping
    the last ``filter:`` of a rule would drop the first one from detection."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)
