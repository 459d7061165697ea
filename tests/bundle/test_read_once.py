"""An inference run reads the checkpoint once and decodes each input once; the intensity normalisation comes from the
checkpoint's settings file and is written once in the package."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch

from mstl_monai.transforms import LoadCTSlice
from tests.bundle._bundle_utils import BUNDLE, CONFIGS
from tests.utils import REPO_ROOT, require_real_data

SHIPPED = BUNDLE / "models" / "model.pt"


def real_slices(data: Path, dest: Path, n: int = 4) -> list[Path]:
    """``n`` COVID19-CT test slices (half COVID) copied into ``dest``."""
    root = data / "covid-ct"
    with open(root / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    picked = [r for r in rows if r["label"] == "COVID"][: n // 2] + [r for r in rows if r["label"] != "COVID"][: n - n // 2]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, r in enumerate(picked):
        out.append(dest / f"slice{i}.png")
        shutil.copy(root / r["file"], out[-1])
    return out


def copy_model(dest: Path, **sidecar_changes) -> Path:
    """The shipped model in ``dest`` (its own path: nothing read earlier in this process is reused)."""
    dest.mkdir(parents=True, exist_ok=True)
    ckpt = dest / "model.pt"
    shutil.copy(SHIPPED, ckpt)
    info = json.loads(Path(f"{SHIPPED}.json").read_text())
    Path(f"{ckpt}.json").write_text(json.dumps({**info, **sidecar_changes}))
    return ckpt


class TestReadOnce(unittest.TestCase):
    def setUp(self):
        self.data = require_real_data(self)
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_once_"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_one_torch_load_and_one_decode_per_input(self):
        from monai.bundle import run

        inputs = real_slices(self.data, self.tmp / "in")
        (self.tmp / "in" / "junk.png").write_bytes(b"not a png")  # unreadable: read once, skipped
        ckpt = copy_model(self.tmp / "model")
        out = self.tmp / "out"
        real_load, real_decode = torch.load, LoadCTSlice.__call__
        with mock.patch("torch.load", side_effect=real_load) as load, mock.patch.object(
            LoadCTSlice, "__call__", autospec=True, side_effect=real_decode
        ) as decode:
            run(
                config_file=str(CONFIGS / "inference.yaml"), bundle_root=str(BUNDLE), ckpt_path=str(ckpt),
                input=str(self.tmp / "in"), output_dir=str(out), amp=False, batch_size=3,
            )
        self.assertEqual(load.call_count, 1)
        decoded = sorted(Path(c.args[1]).name for c in decode.call_args_list)
        self.assertEqual(decoded, sorted([p.name for p in inputs] + ["junk.png"]))
        with open(out / "predictions.csv", newline="") as f:
            self.assertEqual(sorted(Path(r["file"]).name for r in csv.DictReader(f)), sorted(p.name for p in inputs))
        with open(out / "skipped.csv", newline="") as f:
            skipped = list(csv.DictReader(f))
        self.assertEqual([Path(r["file"]).name for r in skipped], ["junk.png"])
        self.assertIn("cannot read CT slice file", skipped[0]["reason"])

    def preprocessed(self, ckpt: Path, image: Path) -> torch.Tensor:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "inference.yaml"))
        parser.update({"bundle_root": str(BUNDLE), "ckpt_path": str(ckpt)})
        return torch.as_tensor(parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]).float()

    def test_normalisation_read_from_the_settings_file(self):
        from mstl_monai.networks import NORMALIZE, load_network

        image = real_slices(self.data, self.tmp / "in", 1)[0]
        shipped = self.preprocessed(copy_model(self.tmp / "a"), image)
        other = {"subtrahend": 0.5, "divisor": 0.25}
        changed = self.preprocessed(copy_model(self.tmp / "b", normalize=other), image)
        self.assertFalse(torch.allclose(shipped, changed))  # the settings file changes the network's input
        unit = shipped * NORMALIZE["divisor"] + NORMALIZE["subtrahend"]  # both undo to the same [0, 1] slice
        torch.testing.assert_close(changed * other["divisor"] + other["subtrahend"], unit, atol=1e-5, rtol=0)
        # a settings file that records none: the package's, with a warning that says so
        with self.assertLogs("mstl_monai.networks.checkpoint", "WARNING") as logs:
            _, settings = load_network(copy_model(self.tmp / "c", normalize=None))
        self.assertEqual(settings["normalize"], NORMALIZE)
        self.assertIn("records no normalize", "\n".join(logs.output))

    def test_normalisation_constants_written_once(self):
        hits = [
            f"{p.relative_to(REPO_ROOT)}:{i}"
            for p in sorted((REPO_ROOT / "mstl_monai").rglob("*.py"))
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
            if "0.449" in line or "0.226" in line
        ]
        self.assertEqual(len(hits), 1, hits)
        self.assertTrue(hits[0].startswith("mstl_monai/networks/sidecar.py:"), hits)


if __name__ == "__main__":
    unittest.main()
