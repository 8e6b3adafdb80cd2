"""Disjoint sets (union-find) over tensor names: which tensors share one buffer (schedule) or one set of
quantization parameters (PTQ)."""
from __future__ import annotations


class DisjointSets:
    def __init__(self, items):
        self.parent = {item: item for item in items}

    def __contains__(self, item) -> bool:
        return item in self.parent

    def find(self, item):
        """The representative of `item`'s set (with path halving)."""
        parent = self.parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def merge(self, keep, drop) -> None:
        """Join the sets of `keep` and `drop`; `keep`'s representative represents the union."""
        a, b = self.find(keep), self.find(drop)
        if a != b:
            self.parent[b] = a
