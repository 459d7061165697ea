# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import copy
import unittest

import torch
import torch.nn.functional as F
from monai.networks import eval_mode

from mstl_monai.losses import InfoNCELoss
from mstl_monai.networks.nets import AttentiveResNet, MoCo

TINY = {"block": "basic", "layers": [1, 2, 1, 1], "block_inplanes": [4, 8, 8, 16], "n_attn": 1}


def tiny_moco(**kwargs) -> MoCo:
    return MoCo(AttentiveResNet(**TINY, num_classes=10), **{"dim": 8, "K": 12, **kwargs})


class TestMoCo(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)

    def test_structure(self):
        moco = tiny_moco()
        self.assertIsInstance(moco.encoder_q_backbone, AttentiveResNet)
        self.assertIs(moco.encoder_q_backbone, moco.encoder_q.backbone)
        self.assertFalse(any(k.startswith("fc.") for k in moco.encoder_q_backbone.state_dict()))  # classifier removed
        head = moco.encoder_q.head  # MoCo v2 MLP: C -> C -> dim
        linears = [(m.in_features, m.out_features) for m in head if isinstance(m, torch.nn.Linear)]
        self.assertEqual(linears, [(16, 16), (16, 8)])
        self.assertTrue(all(not p.requires_grad for p in moco.encoder_k.parameters()))
        for pq, pk in zip(moco.encoder_q.parameters(), moco.encoder_k.parameters()):
            torch.testing.assert_close(pq, pk)
        self.assertEqual(tuple(moco.queue.shape), (8, 12))
        torch.testing.assert_close(moco.queue.norm(dim=0), torch.ones(12))
        self.assertIn("queue", moco.state_dict())
        self.assertIn("queue_ptr", moco.state_dict())

    def test_momentum_update_formula(self):
        moco = tiny_moco(m=0.9)
        with torch.no_grad():
            for p in moco.encoder_q.parameters():
                p.fill_(1.0)
            for p in moco.encoder_k.parameters():
                p.fill_(0.0)
        moco._momentum_update_key_encoder()
        for p in moco.encoder_k.parameters():
            torch.testing.assert_close(p, torch.full_like(p, 0.1))
        moco._momentum_update_key_encoder()  # 0.9 * 0.1 + 0.1 * 1
        for p in moco.encoder_k.parameters():
            torch.testing.assert_close(p, torch.full_like(p, 0.19))
        # with hand-made random tensors
        q = [torch.randn_like(p) for p in moco.encoder_q.parameters()]
        k = [torch.randn_like(p) for p in moco.encoder_k.parameters()]
        with torch.no_grad():
            for p, v in zip(moco.encoder_q.parameters(), q):
                p.copy_(v)
            for p, v in zip(moco.encoder_k.parameters(), k):
                p.copy_(v)
        moco._momentum_update_key_encoder()
        for p, vq, vk in zip(moco.encoder_k.parameters(), q, k):
            torch.testing.assert_close(p, 0.9 * vk + 0.1 * vq)

    def test_enqueue_dequeue(self):
        moco = tiny_moco(dim=3, K=6)
        old = moco.queue.clone()
        keys1 = torch.arange(12, dtype=torch.float32).view(4, 3)
        moco._dequeue_and_enqueue(keys1)
        torch.testing.assert_close(moco.queue[:, :4], keys1.t())
        torch.testing.assert_close(moco.queue[:, 4:], old[:, 4:])
        self.assertEqual(int(moco.queue_ptr), 4)
        keys2 = -torch.arange(1, 13, dtype=torch.float32).view(4, 3)
        moco._dequeue_and_enqueue(keys2)  # the oldest keys go: columns 4, 5, then 0, 1 (wrap-around)
        torch.testing.assert_close(moco.queue[:, 4:6], keys2[:2].t())
        torch.testing.assert_close(moco.queue[:, 0:2], keys2[2:].t())
        torch.testing.assert_close(moco.queue[:, 2:4], keys1[2:].t())
        self.assertEqual(int(moco.queue_ptr), 2)
        with self.assertRaisesRegex(ValueError, "K=6"):
            moco._dequeue_and_enqueue(torch.zeros(7, 3))
        with self.assertRaisesRegex(ValueError, "shape"):
            moco._dequeue_and_enqueue(torch.zeros(2, 4))

    def test_logits_eval(self):
        moco = tiny_moco()
        x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
        queue = moco.queue.clone()
        k_before = copy.deepcopy(moco.encoder_k.state_dict())
        with eval_mode(moco):
            logits, labels = moco(x1, x2)
            q = F.normalize(moco.encoder_q(x1), dim=1)
            k = F.normalize(moco.encoder_k(x2), dim=1)
        expected = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / 0.07
        torch.testing.assert_close(logits, expected)
        self.assertEqual(tuple(logits.shape), (4, 13))
        torch.testing.assert_close(labels, torch.zeros(4, dtype=torch.long))
        torch.testing.assert_close(moco.queue, queue)  # eval: nothing moves
        self.assertEqual(int(moco.queue_ptr), 0)
        for key, v in moco.encoder_k.state_dict().items():
            torch.testing.assert_close(v, k_before[key])

    def test_train_step(self):
        moco = tiny_moco(m=0.5)
        opt = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.1)
        x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
        moco.train()
        logits, labels = moco(x1, x2)
        self.assertEqual(int(moco.queue_ptr), 4)
        torch.testing.assert_close(moco.queue[:, :4].norm(dim=0), torch.ones(4))
        loss = InfoNCELoss()(logits, labels)
        loss.backward()
        self.assertIsNotNone(moco.encoder_q_backbone.conv1.weight.grad)
        self.assertGreater(moco.encoder_q_backbone.attn["layer2_1"].out_norm.weight.grad.abs().sum().item(), 0)
        self.assertTrue(all(p.grad is None for p in moco.encoder_k.parameters()))
        opt.step()
        q_params = [p.detach().clone() for p in moco.encoder_q.parameters()]
        k_params = [p.detach().clone() for p in moco.encoder_k.parameters()]
        moco(x1, x2)
        for p, vq, vk in zip(moco.encoder_k.parameters(), q_params, k_params):
            torch.testing.assert_close(p, 0.5 * vk + 0.5 * vq)
        self.assertEqual(int(moco.queue_ptr), 8)

    def test_single_process_shuffled_bn(self):
        """Keys come from shuffled sub-batches, each normalised with its own batch statistics."""
        moco = tiny_moco(shuffle_bn_splits=2).train()
        x = torch.randn(8, 3, 32, 32)
        torch.manual_seed(7)
        keys = moco._compute_keys(x)
        torch.manual_seed(7)
        perm = torch.randperm(8)
        enc = copy.deepcopy(moco.encoder_k).train()
        manual = torch.cat([enc(x[perm[:4]]), enc(x[perm[4:]])])
        manual = F.normalize(manual, dim=1)[torch.argsort(perm)]
        torch.testing.assert_close(keys, manual)
        whole = F.normalize(copy.deepcopy(moco.encoder_k)(x), dim=1)
        self.assertFalse(torch.allclose(keys, whole, atol=1e-4))  # the batch statistics did change
        # in eval mode (running statistics) the shuffle changes nothing
        with eval_mode(moco):
            torch.testing.assert_close(moco._compute_keys(x), F.normalize(moco.encoder_k(x), dim=1))

    def test_queue_size_check(self):
        moco = tiny_moco(K=16)
        with self.assertRaisesRegex(ValueError, "K=16.*16"):
            moco.check_queue_size(16)
        moco.check_queue_size(425)

    def test_bad_args(self):
        with self.assertRaises(TypeError):
            MoCo(torch.nn.Linear(3, 3))
        for kwargs in ({"K": 0}, {"m": 1.0}, {"T": 0.0}, {"dim": 0}, {"shuffle_bn_splits": 0}):
            with self.assertRaises(ValueError):
                tiny_moco(**kwargs)
        with self.assertRaisesRegex(ValueError, "same shape"):
            tiny_moco()(torch.randn(2, 3, 32, 32), torch.randn(3, 3, 32, 32))


if __name__ == "__main__":
    unittest.main()
