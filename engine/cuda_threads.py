"""CUDA-graphed compiled code on the engine's own threads (the loop's compose thread, the warm-up thread)."""

from __future__ import annotations

import threading
from collections import defaultdict

import torch

__all__ = ["cuda_graph_thread"]


def cuda_graph_thread() -> None:
    """Let this thread run CUDA-graphed compiled code: torch before 2.13 keeps the CUDA graph trees' thread
    state only in the thread that imported them, and asserts in any other plain Python thread (pytorch#123177),
    such as the loop's compose thread or the warm-up thread."""
    from torch._inductor import cudagraph_trees as trees

    local = getattr(trees, "local", None)
    if local is None or hasattr(local, "tree_manager_containers"):
        return
    if torch._C._is_key_in_tls("tree_manager_containers"):
        return
    local.tree_manager_containers = {}
    local.tree_manager_locks = defaultdict(threading.Lock)
