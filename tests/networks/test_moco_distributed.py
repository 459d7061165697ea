# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MoCo across 2 processes (gloo, CPU) gives the keys of one process with the whole batch."""

from __future__ import annotations

import socket
import tempfile
import unittest
from pathlib import Path

import ignite.distributed as idist
import torch
import torch.nn.functional as F

from mstl_monai.networks.nets import AttentiveResNet, MoCo

TINY = {"block": "basic", "layers": [1, 2, 1, 1], "block_inplanes": [4, 8, 8, 16], "n_attn": 1}
BATCH, K, STEPS = 8, 20, 2


def _build() -> tuple[MoCo, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    moco = MoCo(AttentiveResNet(**TINY), dim=8, K=K, shuffle_bn_splits=2)
    x_q = torch.randn(STEPS, BATCH, 3, 32, 32)
    x_k = torch.randn(STEPS, BATCH, 3, 32, 32)
    return moco, x_q, x_k


def _worker(local_rank: int, out_dir: str) -> None:
    rank, world = idist.get_rank(), idist.get_world_size()
    moco, x_q, x_k = _build()
    moco.train()
    shard = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # same permutation draw as the one-process run
        logits, _ = moco(x_q[step, shard], x_k[step, shard])
    torch.save(
        {"queue": moco.queue, "ptr": moco.queue_ptr, "world": world, "logits": logits.detach()},
        Path(out_dir) / f"rank{rank}.pt",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestMoCoDistributed(unittest.TestCase):
    def test_two_processes_equal_one(self):
        with tempfile.TemporaryDirectory() as tmp:
            with idist.Parallel(backend="gloo", nproc_per_node=2, master_port=_free_port()) as parallel:
                parallel.run(_worker, tmp)
            results = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(2)]
        self.assertEqual([r["world"] for r in results], [2, 2])

        moco, x_q, x_k = _build()
        moco.train()
        for step in range(STEPS):
            torch.manual_seed(100 + step)
            moco(x_q[step], x_k[step])
        self.assertEqual(int(moco.queue_ptr), STEPS * BATCH)
        for r in results:
            # both processes queued the keys of the whole batch, in batch order, equal to one process's keys
            self.assertEqual(int(r["ptr"]), STEPS * BATCH)
            torch.testing.assert_close(r["queue"], moco.queue, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(results[0]["queue"], results[1]["queue"], rtol=0, atol=0)
        # the keys really differ from the keys without the BN shuffle
        moco_plain, _, _ = _build()
        moco_plain.train()
        for step in range(STEPS):
            moco_plain._momentum_update_key_encoder()
            with torch.no_grad():
                keys = F.normalize(moco_plain.encoder_k(x_k[step]), dim=1)
        self.assertFalse(torch.allclose(keys.t(), moco.queue[:, BATCH : 2 * BATCH], atol=1e-4))


if __name__ == "__main__":
    unittest.main()
