"""Figure 2: building the variant index from the full modules.alias, cold
(load_index) and from the callout's cache (cache.load_cached), in process."""

from __future__ import annotations

from vfio_flavourd import cache
from vfio_flavourd.aliases import load_index
from vfio_flavourd.policy_load import load_policy
from vfio_flavourd.root import Root

from .report import metric
from .stats import median, timed

RUNS = 20


def run(b) -> list:
    root = Root(b.host("callout"))      # any host with the full modules.alias
    mdir = root.modules_dir()
    index = load_index(mdir)
    cache.store(root, load_policy(root), index)
    if cache.load_cached(root) is None:
        raise RuntimeError("the callout cache did not load back")
    cold = timed(lambda: load_index(mdir), RUNS)
    warm = timed(lambda: cache.load_cached(root), RUNS)
    lines = (mdir / "modules.alias").read_text().count("\n")
    return [
        metric(2, "index_alias_lines", "index: modules.alias lines (vfio_pci aliases)", lines,
               f"lines ({len(index)})"),
        metric(2, "index_cold_median", f"index cold, load_index, median of {RUNS}",
               median(cold) * 1e3, "ms", ("<", 50)),
        metric(2, "index_cached_median", f"index from callout cache, median of {RUNS}",
               median(warm) * 1e3, "ms"),
    ]
