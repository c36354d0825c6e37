"""One run, several processes (`accelerate launch`): each trains on its own device, the main one writes the folder.

Every process calls `start_run` / `resume_run`. The process state comes first, so that each process loads the
pipeline and reward onto its own device (GPU k for process k) and notices print once; the run folder, its
`config.json` and the `latest` alias are the main process's to write (`main_process_only`), the others learn
the folder from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from prefs.errors import UserError

T = TypeVar("T")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # torchrun / accelerate, MPICH, Open MPI


def process_state(device: str | None):
    """(accelerate's process state, the device this process trains on). `--device cuda:N` on one process makes
    GPU N the current one (accelerate places models on the current GPU); under several processes each takes its
    own, so naming one is a UserError."""
    from accelerate import PartialState

    from rlft.models.device import default_device

    several = any(int(os.environ.get(k, "1")) > 1 for k in WORLD_SIZE_VARIABLES)
    if device and ":" in device:
        if several:
            raise UserError(f"--device {device} names one GPU, but under accelerate launch each process takes its own; "
                            "drop --device")
        import torch

        if device.startswith("cuda"):
            torch.cuda.set_device(device)
    state = PartialState(cpu=(device or default_device()) == "cpu")
    if device is None and state.num_processes > 1:
        device = str(state.device)
    return state, device


def main_process_only(state, fn: Callable[[], T]) -> T:
    """`fn()` on the main process; every process returns its result or raises its UserError (so no process is
    left waiting for a folder that was refused)."""
    result, error, failure = None, None, None
    if state.is_main_process:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - passed on to the other processes, then raised here as it was
            error, failure = (str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"), e
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        result, error = broadcast_object_list([result, error], from_process=0)
    if failure is not None:
        raise failure
    if error is not None:
        raise UserError(error)
    return result


def finish_processes(state) -> None:
    """Under several processes: wait until every process is done (the main one writes the run's last files), then
    close the process group. A process that leaves while another is still in a collective, or exits with its
    gloo group open, can abort (SIGABRT) at interpreter exit and take the launcher down with it."""
    if state.num_processes <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        state.wait_for_everyone()
        dist.destroy_process_group()
