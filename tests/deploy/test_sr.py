# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""DICOM SR of a scan's answer: on the real series, read back with pydicom/highdicom, validated by highdicom and
(where Debian's dicom3tools is installed) dciodvfy; and ``configs/inference_scan.yaml --write_sr true``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import highdicom as hd
import pydicom
import torch
from monai.bundle import ConfigParser

from mstl_monai.data import dicom_series_to_nifti
from mstl_monai.deploy import DISCLAIMER, SRScanWriter, build_scan_sr, model_description, read_source_datasets, write_scan_sr
from mstl_monai.inferers import ScanClassifier
from mstl_monai.networks.sidecar import checkpoint_info, write_checkpoint_info
from mstl_monai.inferers.scan_inference import _safe_name
from mstl_monai.transforms import LoadCTSeries
from tests.bundle._bundle_utils import CONFIGS, run_bundle
from tests.scan.test_scan_inference import SERIES, slice_preprocessing, small_net
from tests.utils import DATA_ROOT, require_real_data

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"


def make_checkpoint(folder: Path, threshold: float | None = 0.37, **extra) -> Path:
    """A small ResNet-18 classifier checkpoint with its settings file, as the training stages write them."""
    ckpt = folder / "model.pt"
    torch.save(small_net().state_dict(), ckpt)
    info = checkpoint_info("resnet18", 0, 1, 2, image_size=32, resize_size=36, class_names=["non-COVID", "COVID"], stage="finetune")
    write_checkpoint_info(ckpt, info, decision_threshold=threshold, **extra)
    return ckpt


def content_items(ds) -> list:
    """Every content item of an SR, depth first, with its parent's concept name value."""
    out = []

    def walk(items, parent):
        for item in items:
            out.append((parent, item))
            if "ContentSequence" in item:
                walk(item.ContentSequence, item.ConceptNameCodeSequence[0].CodeValue)

    walk(ds.ContentSequence, ds.ConceptNameCodeSequence[0].CodeValue)
    return out


def by_code(items, code: str) -> list:
    return [it for _, it in items if "ConceptNameCodeSequence" in it and it.ConceptNameCodeSequence[0].CodeValue == code]


class TestScanSR(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl-sr-"))
        if not (DATA_ROOT / SERIES).is_dir():
            return
        cls.folder = DATA_ROOT / SERIES
        cls.ckpt = make_checkpoint(cls.tmp, provenance={"trained_on": "COVID19-CT train split (test fixture)"})
        cls.stack = LoadCTSeries()(cls.folder)
        cls.result = ScanClassifier(small_net(), slice_preprocessing(), n_top=3, n_bootstrap=200)(cls.stack)
        cls.inputs = {str(p): pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(cls.folder.glob("*.dcm"))}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        require_real_data(self)

    def write(self, name: str = "sr.dcm", result=None, **kwargs) -> Path:
        model = model_description(self.ckpt)
        return write_scan_sr(result or self.result, self.tmp / name, model, threshold={"value": 0.37, "source": "checkpoint"}, **kwargs)

    def test_reads_back_with_patient_study_and_new_uids(self):
        path = self.write(n_bootstrap=200)
        sr = pydicom.dcmread(path)
        first = next(iter(self.inputs.values()))
        self.assertEqual((sr.Modality, sr.SOPClassUID), ("SR", COMPREHENSIVE_SR))
        for key in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID", "StudyDate"):
            self.assertEqual(str(sr.get(key)), str(first.get(key)), key)
        in_uids = {str(ds.SOPInstanceUID) for ds in self.inputs.values()}
        self.assertNotEqual(sr.SeriesInstanceUID, first.SeriesInstanceUID)
        self.assertNotIn(str(sr.SOPInstanceUID), in_uids)
        self.assertIn("NOT FOR DIAGNOSTIC USE", sr.SeriesDescription)
        again = hd.sr.srread(path)  # highdicom parses the content tree back (and checks it)
        self.assertIsInstance(again, hd.sr.ComprehensiveSR)

    def test_references_existing_instances(self):
        sr = pydicom.dcmread(self.write())
        items = content_items(sr)
        refs = [str(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for _, it in items if it.ValueType == "IMAGE"]
        uid_of = {p: str(ds.SOPInstanceUID) for p, ds in self.inputs.items()}
        used = [uid_of[s["source"]] for s in self.result["slices"] if s["used"]]
        top = [uid_of[t["source"]] for t in self.result["top_slices"]]
        source_images = [str(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for it in by_code(items, "121324")]
        self.assertEqual(source_images, used)  # every used slice, in order
        best = [(p, it) for p, it in items if it.ValueType == "IMAGE" and it.ConceptNameCodeSequence[0].CodeValue == "121080"]
        self.assertEqual([str(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for _, it in best], top)
        self.assertTrue(all(it.RelationshipType == "INFERRED FROM" for _, it in best))
        self.assertTrue(set(refs) <= set(uid_of.values()))
        evidence = {
            str(i.ReferencedSOPInstanceUID)
            for s in sr.CurrentRequestedProcedureEvidenceSequence
            for se in s.ReferencedSeriesSequence
            for i in se.ReferencedSOPSequence
        }
        self.assertEqual(evidence, set(used) | set(top))

    def test_headers_read_already_give_the_same_report(self):
        """The series selection's headers (pixel data deferred) give the same SR as reading the files, and are not
        changed (the Type 2 attributes go into a copy of the first used slice's header only)."""
        from mstl_monai.transforms.io.dicom_folder import read_dicom_folder

        found = read_dicom_folder(self.folder)
        headers = {p: ds for items in found.series.values() for p, ds in items}
        before = {p: sorted(ds.keys()) for p, ds in headers.items()}
        model = model_description(self.ckpt)
        a = build_scan_sr(self.result, read_source_datasets(self.result), model, 0.5)
        given = read_source_datasets(self.result, headers)
        b = build_scan_sr(self.result, given, model, 0.5)
        self.assertEqual({p: sorted(ds.keys()) for p, ds in headers.items()}, before)
        first = self.result["slices"][[s["used"] for s in self.result["slices"]].index(True)]["source"]
        self.assertIsNot(given[first], headers[first])
        self.assertNotIn("PixelData", given[first])

        def plain(ds):  # the written dataset less its new UIDs and creation times
            path = self.tmp / f"cmp{id(ds)}.dcm"
            ds.save_as(path, enforce_file_format=True)
            d = pydicom.dcmread(path)
            for key in ("SOPInstanceUID", "SeriesInstanceUID", "ContentDate", "ContentTime", "InstanceCreationDate",
                        "InstanceCreationTime", "ContributingEquipmentSequence"):
                if key in d:
                    delattr(d, key)
            del d.file_meta.MediaStorageSOPInstanceUID
            return str(d)

        self.assertEqual(plain(a), plain(b))
        self.assertIsInstance(hd.sr.srread(self.tmp / f"cmp{id(b)}.dcm"), hd.sr.ComprehensiveSR)

    def test_finding_probability_interval_model(self):
        sr = pydicom.dcmread(self.write(n_bootstrap=200))
        items = content_items(sr)
        (finding,) = by_code(items, "121071")
        want = "COVID19-SUSP" if self.result["probability"] > 0.37 else "COVID19-NOTSUSP"
        self.assertEqual(finding.ConceptCodeSequence[0].CodeValue, want)
        (prob,) = by_code(items, "122157")
        self.assertAlmostEqual(float(prob.MeasuredValueSequence[0].NumericValue), self.result["probability"], places=6)
        (lo,), (hi,) = by_code(items, "CI-LOWER"), by_code(items, "CI-UPPER")
        self.assertAlmostEqual(float(lo.MeasuredValueSequence[0].NumericValue), self.result["ci_low"], places=6)
        self.assertAlmostEqual(float(hi.MeasuredValueSequence[0].NumericValue), self.result["ci_high"], places=6)
        (thr,) = by_code(items, "122411")
        self.assertEqual(float(thr.MeasuredValueSequence[0].NumericValue), 0.37)
        (used,) = by_code(items, "N-USED")
        self.assertEqual(int(used.MeasuredValueSequence[0].NumericValue), self.result["slices_used"])
        text = {it.ConceptNameCodeSequence[0].CodeValue: it.TextValue for _, it in items if it.ValueType == "TEXT"}
        self.assertEqual(text["WEIGHTS-SHA256"].split()[0], hashlib.sha256(self.ckpt.read_bytes()).hexdigest())
        self.assertEqual(text["TRAINING-DATA"], "COVID19-CT train split (test fixture)")
        self.assertIn("mstl-monai", text["111003"])  # Algorithm Version
        self.assertIn("resnet18", text["111001"])  # Algorithm Name
        self.assertEqual(text["DISCLAIMER"], DISCLAIMER)
        self.assertEqual(text["THR-SOURCE"], "the checkpoint's, chosen on its validation split")
        self.assertNotIn("CI-NONE", text)

    def test_no_interval_is_said_not_invented(self):
        res = ScanClassifier(small_net(), slice_preprocessing(), n_top=1, n_bootstrap=0)(self.stack)
        sr = pydicom.dcmread(self.write("no_ci.dcm", result=res, n_bootstrap=0))
        items = content_items(sr)
        self.assertEqual(by_code(items, "CI-LOWER") + by_code(items, "CI-UPPER"), [])
        (note,) = by_code(items, "CI-NONE")
        self.assertEqual(note.TextValue, f"No interval: {res['ci_note']}.")
        self.assertIn("n_bootstrap is 0", note.TextValue)
        (stated,) = by_code(items, "FINDING-TEXT")
        self.assertNotIn("interval", stated.TextValue)
        self.assertRegex(stated.TextValue, r"^COVID-19 (not )?suspected: P\(COVID\) = 0\.\d{3} (>|<=) decision threshold 0\.37 ")
        one = dict(res, n=1, slices_used=1, ci_note="")  # a result without the aggregation's note: said all the same
        datasets = read_source_datasets(res)
        built = build_scan_sr(one, datasets, model_description(self.ckpt), 0.5)
        (note,) = by_code(content_items(built), "CI-NONE")
        self.assertIn("only 1 slice", note.TextValue)

    def test_training_data_not_recorded(self):
        other = self.tmp / "plain"
        other.mkdir(exist_ok=True)
        model = model_description(make_checkpoint(other))
        self.assertIsNone(model["training_data"])
        sr = pydicom.dcmread(write_scan_sr(self.result, other / "sr.dcm", model, 0.5))
        (item,) = by_code(content_items(sr), "TRAINING-DATA")
        self.assertEqual(item.TextValue, "not recorded in model.pt.json")

    def test_calibration_is_stated(self):
        (agg,) = by_code(content_items(pydicom.dcmread(self.write("plain.dcm"))), "AGGREGATION")
        self.assertTrue(agg.TextValue.endswith("the network's output, not calibrated"), agg.TextValue)
        other = self.tmp / "calibrated"
        other.mkdir(exist_ok=True)
        model = model_description(make_checkpoint(other, temperature=1.7))
        self.assertEqual(model["temperature"], 1.7)
        (agg,) = by_code(content_items(build_scan_sr(self.result, read_source_datasets(self.result), model, 0.5)), "AGGREGATION")
        self.assertIn("not calibrated (the checkpoint's temperature T = 1.7 is not applied)", agg.TextValue)
        applied = build_scan_sr(dict(self.result, temperature=1.7), read_source_datasets(self.result), model, 0.5)
        (agg,) = by_code(content_items(applied), "AGGREGATION")
        self.assertIn("calibrated with the checkpoint's temperature T = 1.7", agg.TextValue)

    def test_nifti_result_is_refused_with_its_name(self):
        with self.assertRaisesRegex(ValueError, r"scan\.nii\.gz.*needs a DICOM series"):
            read_source_datasets(dict(self.result, scan="scan.nii.gz", source_format="nifti"))

    def edited_result(self, name: str, **edits_by_index) -> dict:
        """The scan result re-pointed at a copy of the real series whose files ``edits_by_index`` (index -> tags,
        ``None``: PatientID deleted) are edited."""
        from tests.scan._series import copy_series, edit_slice

        folder = copy_series(self.folder, self.tmp / name)
        files = sorted(folder.glob("*.dcm"))
        for i, tags in edits_by_index.items():
            i = int(i.lstrip("_"))
            edit_slice(files[i], delete=("PatientID",)) if tags is None else edit_slice(files[i], **tags)

        def moved(entry):
            return dict(entry, source=str(folder / Path(entry["source"]).name))

        return dict(self.result, scan=str(folder), slices=[moved(s) for s in self.result["slices"]],
                    top_slices=[moved(t) for t in self.result["top_slices"]])

    def test_series_mixing_patients_gets_no_sr(self):
        """A series whose files name two patients gets no report, even where the other patient's files are all
        skipped slices; the writer says why in its row, on stdout and in the log."""
        skipped = [i for i, s in enumerate(self.result["slices"]) if not s["used"]]
        used = [i for i, s in enumerate(self.result["slices"]) if s["used"]]
        self.assertTrue(skipped and used)
        for label, index in (("skipped", skipped[0]), ("used", used[-1])):
            res = self.edited_result(f"twopat-{label}", **{f"_{index}": {"PatientID": "OTHER"}})
            with self.assertRaisesRegex(ValueError, r"carry 2 PatientIDs \('Lung_Dx-A0002' \(29 files.*'OTHER' \(1 files"):
                read_source_datasets(res)
        writer = SRScanWriter(str(self.tmp / "w2"), write_sr=True, ckpt_path=self.ckpt, threshold=0.37)
        with self.assertLogs("mstl_monai.deploy.writer", level="WARNING") as logs:
            row = writer.add(res)
        self.assertIsNone(row["sr_file"])
        self.assertIn("one report cannot be about several patients", row["sr_message"])
        self.assertIn("several patients", "\n".join(logs.output))
        self.assertFalse((self.tmp / "w2" / "sr").exists() and any((self.tmp / "w2" / "sr").iterdir()))

    def test_series_without_patient_id_gets_no_sr(self):
        """No PatientID (deleted, or empty in every file): refused as a missing StudyInstanceUID is."""
        n = len(self.result["slices"])
        for name, tags in (("nopid", None), ("emptypid", {"PatientID": ""})):
            res = self.edited_result(name, **{f"_{i}": tags for i in range(n)})
            with self.assertRaisesRegex(ValueError, r"have no PatientID .*cannot be filed under its patient"):
                read_source_datasets(res)

    def test_defaults_of_a_checkpoint_without_settings_file_are_said(self):
        bare = self.tmp / "bare"
        bare.mkdir(exist_ok=True)
        shutil.copy(self.ckpt, bare / "model.pt")
        sr = build_scan_sr(self.result, read_source_datasets(self.result), model_description(bare / "model.pt"), 0.5)
        (net,) = by_code(content_items(sr), "NETWORK")
        self.assertIn("no settings file, so the input size and the intensity normalisation are the defaults", net.TextValue)
        self.assertIn("stage not recorded", net.TextValue)
        (net,) = by_code(content_items(pydicom.dcmread(self.write("with.dcm"))), "NETWORK")
        self.assertEqual(net.TextValue, "resnet18, 32 px input, stage finetune")

    @unittest.skipUnless(shutil.which("dciodvfy"), "dciodvfy (Debian's dicom3tools) is not installed")
    def test_dciodvfy_finds_no_error(self):
        proc = subprocess.run(["dciodvfy", str(self.write("v.dcm"))], capture_output=True, text=True, timeout=120)
        out = proc.stdout + proc.stderr
        self.assertIn("ComprehensiveSR", out)
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        self.assertEqual(errors, [], out)


class TestInferenceScanWriteSR(unittest.TestCase):
    """``configs/inference_scan.yaml --write_sr true`` on the real series and a NIfTI volume."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-sr-bundle-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.ckpt = make_checkpoint(self.tmp)

    def test_default_writes_no_sr(self):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "inference_scan.yaml"))
        parser.update({"bundle_root": str(self.tmp), "ckpt_path": str(self.ckpt), "device": "cpu"})
        parser.parse()
        writer = parser.get_parsed_content("writer")
        self.assertIsInstance(writer, SRScanWriter)
        self.assertFalse(writer.write_sr)

    def test_bundle_writes_sr_per_series(self):
        folder = require_real_data(self) / SERIES
        nii = dicom_series_to_nifti(folder, self.tmp / "a0002.nii.gz")
        out = self.tmp / "out"
        overrides = {"ckpt_path": str(self.ckpt), "input": [str(folder), str(nii)], "output_dir": str(out),
                     "write_sr": True, "n_bootstrap": 200, "batch_size": 8}
        proc = run_bundle(["inference_scan.yaml"], overrides, timeout=900)
        sr_file = out / "sr" / f"{_safe_name(str(folder))}.dcm"  # lung-pet-ct-dx-A0002-<hash of the path>.dcm
        self.assertIn(f"DICOM SR written to {sr_file}", proc.stdout)
        self.assertIn(f"{nii}: no DICOM SR: CT scan {str(nii)!r} is a nifti input", proc.stdout)
        self.assertEqual(sorted(p.name for p in (out / "sr").iterdir()), [sr_file.name])
        sr = pydicom.dcmread(sr_file)
        first = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
        self.assertEqual((sr.PatientID, sr.StudyInstanceUID), (first.PatientID, first.StudyInstanceUID))
        (thr,) = by_code(content_items(sr), "122411")
        self.assertEqual(float(thr.MeasuredValueSequence[0].NumericValue), 0.37)  # the checkpoint's threshold


if __name__ == "__main__":
    unittest.main()
