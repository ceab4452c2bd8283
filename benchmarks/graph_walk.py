"""Benchmark 15: the calibrated flatness's shortest paths read one way on graphs that store both directions, and
its support test in blocks sized for a CPU core's cache, each against how it was before, side by side.

The chord graph and the kNN graph store every edge in both directions with one length. scipy's undirected
Dijkstra builds the transpose and walks it beside the graph; ``symmetric_dijkstra`` reads the graph as directed,
with the same lengths and predecessors. The support test (``segments_supported``) took 2,048 segments at a time,
each a row of the (n, n) squared distances: at 1,000 points 8 MB per matrix, beyond a core's L2; on a CPU it now
takes ``cpu_block(n)`` (about 2 MiB of rows). Its timings are taken alone and with the other core running the
same test at the old block size (the test suite's two workers), since the old block's traffic to the shared
cache is what the other core contends for.

    python benchmarks/graph_walk.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import multiprocessing

import numpy as np
from common import arguments, emit, machine, median_time, today
from flatness_subspace import embed, full_rank_sets, side_by_side, test_sets


def support_case(n: int):
    """The support test's arguments as a reading of a swiss roll of ``n`` points in R^64 passes them."""
    import torch
    from sklearn.datasets import make_swiss_roll

    from geotune.analysis.flatness import squared_distances, support_tolerance

    x = embed(make_swiss_roll(n, random_state=0)[0], 4)
    sq = squared_distances(x)
    r = np.sqrt(np.sort(sq.double().numpy(), 1)[:, 10])
    tau = support_tolerance(10, 2.0, n=n)
    i, j = np.random.default_rng(0).integers(0, n, (2, 8000))  # MAX_PAIRS sampled pairs
    return sq, i, j, torch.from_numpy((tau * r) ** 2).float(), tau * float(np.median(r))


def keep_busy(stop, n: int) -> None:
    """The other core: the support test at the old block size, over and over, until ``stop`` is set."""
    import torch

    from geotune.analysis.flatness import GPU_BLOCK, segments_supported

    torch.set_num_threads(1)
    case = support_case(n)
    while not stop.is_set():
        segments_supported(*case, block=GPU_BLOCK)


def support_timings(repeats: int) -> dict:
    """ms per call of the support test at the old and the new block size, alone and beside a busy core."""
    from geotune.analysis.flatness import GPU_BLOCK, cpu_block, segments_supported

    rows = {}
    for n in (400, 1000, 3000):
        case = support_case(n)
        answers = {b: segments_supported(*case, block=b) for b in (GPU_BLOCK, cpu_block(n))}
        row = {"block now": cpu_block(n), "same answers": bool(np.array_equal(*answers.values()))}
        for label in ("alone", "beside a busy core"):
            busy = None
            if label != "alone":
                stop = multiprocessing.Event()
                busy = multiprocessing.Process(target=keep_busy, args=(stop, n))
                busy.start()
                median_time(lambda case=case: segments_supported(*case), 3)  # while the other process starts up
            for name, block in (("2048", GPU_BLOCK), ("now", cpu_block(n))):
                seconds, _ = median_time(lambda b=block, c=case: segments_supported(*c, block=b), repeats)
                row[f"{label}: {name} (ms)"] = round(1000 * seconds, 1)
            if busy is not None:
                stop.set()
                busy.join()
        rows[f"{n} points"] = row
    return rows


def walks(repeats: int) -> dict:
    """Seconds for the Dijkstra runs of a reading of each set (its graph and sources, caught as the reading
    passes them), undirected as before and one way as now, and whether lengths and predecessors agree."""
    from scipy.sparse.csgraph import dijkstra

    from geotune.analysis import flatness

    caught, now = [], flatness.symmetric_dijkstra
    flatness.symmetric_dijkstra = lambda g, s, predecessors: caught.append((g, s)) or now(g, s, predecessors)
    try:
        for x in {**test_sets(), **full_rank_sets()}.values():
            flatness.chord_flatness(x, 10, check_resolution=True)
    finally:
        flatness.symmetric_dijkstra = now
    before, after = (
        median_time(lambda d=directed: [dijkstra(g, directed=d, indices=s) for g, s in caught], repeats)[0]
        for directed in (False, True)
    )
    same = all(
        all(
            np.array_equal(a, b)
            for a, b in zip(now(g, s, True), dijkstra(g, directed=False, indices=s, return_predecessors=True))
        )
        for g, s in caught
    )
    return {
        "graphs": len(caught),
        "undirected (s)": round(before, 3),
        "one way (s)": round(after, 3),
        "speed-up": round(before / after, 2),
        "same lengths and predecessors": same,
    }


def readings(repeats: int) -> dict:
    """Whole readings (resolution probe included) with both changes swapped out, and as they are."""
    from scipy.sparse.csgraph import dijkstra

    from geotune.analysis import flatness

    def undirected(graph, sources, predecessors):
        return dijkstra(graph, directed=False, indices=sources, return_predecessors=predecessors)

    before = {"symmetric_dijkstra": undirected, "cpu_block": lambda n: flatness.GPU_BLOCK}
    return {name: side_by_side(flatness, x, before, repeats) for name, x in {**test_sets(), **full_rank_sets()}.items()}


def main() -> None:
    args = arguments(__doc__, repeats=5)

    import torch

    torch.set_num_threads(1)
    result = {"machine": machine(f"torch {torch.__version__}, 1 thread"), "date": today()}
    result["support test"] = support_timings(args.repeats)
    result["shortest paths"] = walks(args.repeats)
    result["readings"] = readings(args.repeats)
    emit(result, args.json)


if __name__ == "__main__":
    main()
