# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""ONNX export (dynamic batch) of the slice classifier and onnxruntime's CPU output against PyTorch's, on real
COVID19-CT test slices, for an attentive ResNet and a ViT."""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

import onnx
import torch
from parameterized import parameterized

from mstl_monai.data import covid_ct_datalist
from mstl_monai.deploy import OnnxClassifier, export_checkpoint_onnx, export_onnx, load_slices, max_abs_diff
from mstl_monai.networks.sidecar import checkpoint_info, write_checkpoint_info
from mstl_monai.networks import build_network
from tests.utils import require_real_data

SIZE = 64


def real_test_slices(testcase, n: int = 8) -> torch.Tensor:
    """``n`` slices of the COVID19-CT test split (half COVID, half not), preprocessed to ``SIZE`` px."""
    rows = covid_ct_datalist(require_real_data(testcase) / "covid-ct", "test")
    covid = [r["image"] for r in rows if r["label"] == 1][: n // 2]
    other = [r["image"] for r in rows if r["label"] == 0][: n - n // 2]
    return load_slices(covid + other, SIZE, SIZE + 8)


def untrained(name: str) -> torch.nn.Module:
    """A seeded untrained network whose non-local blocks are not the identity (their output scale is set)."""
    torch.manual_seed(0)
    kwargs = {"n_attn": 5} if name == "resnet18" else {"img_size": SIZE, "patch_size": 16}
    net = build_network(name, n_input_channels=1, num_classes=2, **kwargs).eval()
    for block in (net.attn.values() if hasattr(net, "attn") else []):
        torch.nn.init.normal_(block.out_norm.weight, std=0.5)
        torch.nn.init.normal_(block.out_norm.bias, std=0.1)
    return net


class TestOnnxExport(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-onnx-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    @parameterized.expand([["resnet18_attn5", "resnet18"], ["vit_tiny", "vit_tiny"]])
    def test_parity_on_real_slices_any_batch(self, _, name):
        x = real_test_slices(self)
        net = untrained(name)
        if name == "resnet18":  # the attention really changes the output (not the identity at init)
            plain = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=2).eval()
            plain.load_state_dict(net.state_dict())
            for block in plain.attn.values():
                torch.nn.init.zeros_(block.out_norm.weight)
                torch.nn.init.zeros_(block.out_norm.bias)
            with torch.no_grad():
                self.assertGreater(float((plain(x) - net(x)).abs().max()), 1e-2)
        path = export_onnx(net, self.tmp / f"{name}.onnx", SIZE)
        dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
        self.assertEqual([d.dim_param or d.dim_value for d in dims], ["batch", 1, SIZE, SIZE])
        ort_net = OnnxClassifier(path, threads=1)
        for batch in (x, x[:3], x[:1]):  # dynamic batch: 8, 3 and 1 slices from a model exported at 2
            diff = max_abs_diff(net, ort_net, batch)
            self.assertLessEqual(diff["logits"], 1e-4, diff)
            self.assertTrue(diff["argmax_agree"])
            self.assertEqual(diff["n"], batch.shape[0])

    def test_checkpoint_export_writes_settings(self):
        ckpt = self.tmp / "model.pt"
        torch.save(untrained("resnet18").state_dict(), ckpt)
        info = checkpoint_info("resnet18", 5, 1, 2, image_size=SIZE, resize_size=SIZE + 8, class_names=["non-COVID", "COVID"])
        write_checkpoint_info(ckpt, info, decision_threshold=0.4)
        path = export_checkpoint_onnx(ckpt, self.tmp / "out" / "model.onnx")
        meta = json.loads(Path(f"{path}.json").read_text())
        self.assertEqual((meta["backbone"], meta["n_attn"], meta["decision_threshold"]), ("resnet18", 5, 0.4))
        self.assertEqual(meta["onnx"]["input_shape"], ["batch", 1, SIZE, SIZE])
        self.assertEqual(meta["class_names"], ["non-COVID", "COVID"])
        self.assertEqual(sorted(p.name for p in path.parent.iterdir()), ["model.onnx", "model.onnx.json"])  # no temp left

    def test_script_checks_arguments_first_and_removes_a_failed_export(self):
        import importlib.util
        from unittest import mock

        data = require_real_data(self) / "covid-ct"
        spec = importlib.util.spec_from_file_location("export_onnx_script", Path(__file__).resolve().parents[2] / "scripts" / "export_onnx.py")
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        ckpt = self.tmp / "model.pt"
        torch.manual_seed(0)
        torch.save(build_network("resnet18", n_input_channels=1, num_classes=2).state_dict(), ckpt)
        write_checkpoint_info(ckpt, checkpoint_info("resnet18", 0, 1, 2, image_size=32, resize_size=36))
        out = self.tmp / "out" / "model.onnx"
        a_file = self.tmp / "a_file"
        a_file.write_text("x")
        for bad, words in ((["--check-slices", "-3"], "--check-slices must be >= 0"),
                           (["--tolerance", "-1"], "--tolerance must be a number > 0"),
                           (["--opset", "5"], "--opset must be at least 13"),
                           (["--data", str(self.tmp)], "is not a COVID19-CT folder")):
            with self.subTest(bad=bad), self.assertRaises(SystemExit), mock.patch("sys.stderr") as err:
                script.main(["--ckpt", str(ckpt), "--output", str(out), "--data", str(data), *bad])
            self.assertIn(words, "".join(c.args[0] for c in err.write.call_args_list))
        with self.assertRaises(SystemExit), mock.patch("sys.stderr") as err:
            script.main(["--ckpt", str(ckpt), "--output", str(a_file / "m.onnx"), "--data", str(data)])
        self.assertIn("is a file, not a folder", "".join(c.args[0] for c in err.write.call_args_list))
        self.assertFalse(out.exists())  # nothing written by a refused command
        # a parity check that fails leaves no model.onnx that looks usable
        failing = {"n": 2, "logits": 1.0, "probabilities": 0.5, "argmax_agree": False}
        with mock.patch("mstl_monai.deploy.max_abs_diff", return_value=failing):
            rc = script.main(["--ckpt", str(ckpt), "--output", str(out), "--data", str(data), "--check-slices", "2"])
        self.assertEqual(rc, 1)
        self.assertFalse(out.exists())
        self.assertFalse(Path(f"{out}.json").exists())

    def test_errors_name_the_file(self):
        with self.assertRaisesRegex(FileNotFoundError, "nothing.onnx"):
            OnnxClassifier(self.tmp / "nothing.onnx")
        bad = self.tmp / "bad.onnx"
        bad.write_bytes(b"not a model")
        with self.assertRaisesRegex(ValueError, "bad.onnx"):
            OnnxClassifier(bad)
        with self.assertRaisesRegex(ValueError, "logits"):
            export_onnx(torch.nn.Identity(), self.tmp / "id.onnx", 8)


if __name__ == "__main__":
    unittest.main()
