"""A packable toy workload: the toy law, trained "together", with knobs to exercise the pack path.

`max_pack` makes train_pack raise torch.OutOfMemoryError for larger packs (what a GPU raises when a
pack does not fit), `member_bytes` sets the memory estimate that cuts packs to the device budget.
"""

from __future__ import annotations

from typing import Hashable, Sequence

from pydantic import Field

from tests.toy_workloads import PowerLawToy, ToyConfig
from workloads.api import Reporter, TrialDiverged


class PackedToyConfig(ToyConfig):
    max_pack: int | None = Field(default=None, ge=1, description="train_pack runs out of memory above this many members")
    member_bytes: int = Field(default=1000, ge=1, description="device memory one member needs (bytes)")


class PackedPowerLawToy(PowerLawToy):
    """PowerLawToy whose trials can share a pack; each member reports the pack size it trained in."""

    Config = PackedToyConfig

    def pack_key(self, config: PackedToyConfig) -> Hashable:
        return ("toy", config.epochs)

    def pack_member_bytes(self, config: PackedToyConfig) -> int:
        return config.member_bytes

    def train_pack(self, configs: Sequence[PackedToyConfig], reporters: Sequence[Reporter]) -> None:
        import torch

        limit = configs[0].max_pack
        if limit is not None and len(configs) > limit:
            raise torch.OutOfMemoryError(f"toy: a pack of {len(configs)} does not fit, at most {limit}")
        for config, reporter in zip(configs, reporters):
            try:
                self.train(config, reporter)  # raises for fail_on_n: the whole pack fails, as a real one would
            except TrialDiverged:
                continue  # only this member stops
