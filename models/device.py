"""What accelerator this machine offers (torch is imported only when asked)."""

from __future__ import annotations

import importlib.util
import shutil


def gpu_report() -> tuple[bool, str]:
    """(usable, plain words) about CUDA for the diffusion engine."""
    if importlib.util.find_spec("torch") is None:
        if shutil.which("nvidia-smi"):
            return False, ("an NVIDIA driver is installed but PyTorch is not: the diffusion engine will "
                           "need PyTorch with CUDA (https://pytorch.org/get-started/locally/)")
        return False, "no NVIDIA GPU found: the studio engine (CPU) will be used"
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        return True, f"{name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free), CUDA {torch.version.cuda}"
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    return False, f"PyTorch {torch.__version__} ({build}) sees no CUDA GPU: the studio engine (CPU) will be used"


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU (False where PyTorch is not installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())
