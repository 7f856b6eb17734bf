"""Data-parallel evaluation with no scheduler of our own: a launcher (torchrun, accelerate launch, a cluster's
array job) starts N copies of the same command and tells each its RANK, WORLD_SIZE and LOCAL_RANK.

Item i of the benchmark (in file order, the first `--limit` items) belongs to rank i % WORLD_SIZE; each rank
skips what any rank has already written and appends to its own results file, so no two processes ever write
one file, and a run resumes under any world size. The processes never talk to each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..utils.errors import UserError


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes of one evaluation."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise UserError(f"RANK={self.rank}, WORLD_SIZE={self.world_size}, LOCAL_RANK={self.local_rank}: need "
                            "0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0 (set by torchrun or accelerate launch).")

    @classmethod
    def from_environment(cls, environ=None) -> "Shard":
        environ = os.environ if environ is None else environ
        try:
            numbers = [int(environ.get(name, default)) for name, default in
                       (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))]
        except ValueError:
            raise UserError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got {environ.get('RANK')!r}, "
                            f"{environ.get('WORLD_SIZE')!r}, {environ.get('LOCAL_RANK')!r}.") from None
        return cls(*numbers)

    def owns(self, index: int) -> bool:
        return index % self.world_size == self.rank

    @property
    def suffix(self) -> str:
        """'' for rank 0 (a one-process run's files keep their names), '.rank{r}' for the others."""
        return "" if self.rank == 0 else f".rank{self.rank}"

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.world_size}" if self.world_size > 1 else ""


def gpu_memory(index: int) -> int:
    import torch

    return torch.cuda.get_device_properties(index).total_memory


def device_map_for(shard: Shard, device_map: str | dict | None, gpus_per_process: int | None = None,
                   gpu_count: int | None = None) -> tuple[str | dict | None, dict | None]:
    """(device_map, max_memory) for this process's model. One GPU per process by default (LOCAL_RANK's);
    with `gpus_per_process` K, LOCAL_RANK r spreads the model over GPUs r*K .. r*K+K-1 (device_map auto,
    limited to those). Without GPUs, the caller's device_map as given."""
    import torch

    gpu_count = torch.cuda.device_count() if gpu_count is None else gpu_count
    if gpus_per_process is not None:
        first = shard.local_rank * gpus_per_process
        if gpus_per_process < 1 or first + gpus_per_process > gpu_count:
            raise UserError(f"--gpus-per-process {gpus_per_process} with LOCAL_RANK {shard.local_rank} needs GPUs "
                            f"{first}..{first + gpus_per_process - 1}, but {gpu_count} are visible.")
        return "auto", {i: gpu_memory(i) for i in range(first, first + gpus_per_process)}  # only these GPUs
    if shard.world_size > 1 and device_map is None and gpu_count > 0:
        return {"": f"cuda:{shard.local_rank % gpu_count}"}, None
    return device_map, None
