# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A scan's answer as a DICOM Comprehensive Structured Report (made with ``highdicom``).

The report is a new instance in a new series of the input's study: patient and study attributes are copied from
the input series (highdicom's ``copy_patient_and_study_information``), and it references the CT instances it rests
on by their SOP Instance UIDs (also listed in ``CurrentRequestedProcedureEvidenceSequence``). Its content tree:

- root ``Diagnostic Imaging Report`` (LOINC 18748-4), observed by a device: the model (TID 1004 device observer);
- ``Findings`` (DCM 121070): the ``Finding`` (DCM 121071; COVID-19 suspected / not suspected at the decision
  threshold), a sentence that states it with its numbers, the ``Probability`` (DCM 122157) with the lower and
  upper limits of its interval (or a sentence saying why there is none), the ``Threshold Value`` (DCM 122411) and
  where it came from, the slices in the series / used / skipped, the aggregation rule, a ``Source image``
  (DCM 121324) item per used slice and, per top slice, its probability ``INFERRED FROM`` the slice's image
  (``Best illustration of finding``, DCM 121080);
- ``Equipment Identification`` (DCM 121122): ``Algorithm Name``/``Version`` (DCM 111001/111003), the weights'
  SHA-256, the training data as the checkpoint's settings file records it (or that it does not), the network;
- a disclaimer: not for diagnostic use.

Concepts DICOM has no code for use the local scheme ``99MSTL`` (declared in ``CodingSchemeIdentificationSequence``).

.. code-block:: python

    threshold = {"value": 0.42, "source": "checkpoint"}
    path = write_scan_sr(result, "out/sr/a0002.dcm", model_description(ckpt), threshold=threshold)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DISCLAIMER", "LOCAL_SCHEME", "build_scan_sr", "read_source_datasets", "write_scan_sr"]

#: the designator of this package's local codes
LOCAL_SCHEME = "99MSTL"
#: the report's statement of use
DISCLAIMER = (
    "NOT FOR DIAGNOSTIC USE. Research software output (mstl-monai), not a medical device: the finding is a "
    "network's reading of CT slices and must not be used for patient care."
)
#: Series Number of the reports (a number far above the scanner's own series)
SR_SERIES_NUMBER = 9901

#: Type 2 patient/study attributes the report copies from its input (empty when the input lacks them)
_TYPE2_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
                 "AccessionNumber", "ReferringPhysicianName")

# local codes: value (<= 16 characters), meaning (<= 64)
_LOCAL_CODES = {
    "suspected": ("COVID19-SUSP", "COVID-19 suspected"),
    "not_suspected": ("COVID19-NOTSUSP", "COVID-19 not suspected"),
    "ci_low": ("CI-LOWER", "Lower limit of 95% bootstrap interval"),
    "ci_high": ("CI-UPPER", "Upper limit of 95% bootstrap interval"),
    "ci_none": ("CI-NONE", "Interval not available"),
    "threshold_source": ("THR-SOURCE", "Source of decision threshold"),
    "n_slices": ("N-SLICES", "Slices in series"),
    "n_used": ("N-USED", "Slices classified"),
    "n_skipped": ("N-SKIPPED", "Slices skipped (too little lung)"),
    "aggregation": ("AGGREGATION", "Aggregation of slice probabilities"),
    "slice_prob": ("SLICE-PROB", "Slice probability of COVID-19"),
    "weights_sha256": ("WEIGHTS-SHA256", "SHA-256 of model weights"),
    "training_data": ("TRAINING-DATA", "Training data"),
    "network": ("NETWORK", "Network architecture"),
    "disclaimer": ("DISCLAIMER", "Disclaimer"),
    "finding_text": ("FINDING-TEXT", "Finding, stated"),
}


#: the (7FE0,0010) Pixel Data tag: a header copied for the SR keeps the elements before it
_PIXEL_DATA = 0x7FE00010


def _local(key: str):
    import highdicom as hd

    value, meaning = _LOCAL_CODES[key]
    return hd.sr.CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def read_source_datasets(result: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The DICOM headers (no pixel data) of the slices a scan result uses, by file path.

    Args:
        result: a :class:`~mstl_monai.inferers.scan.ScanClassifier` result of a DICOM series (its ``slices`` name the
            files under ``source``).
        headers: the datasets of (some of) these files by path, read already (e.g. by the series selection, with
            the pixel data deferred), taken instead of reading the files again and never changed: the first used
            slice's (whose patient and study attributes the report copies) as a copy without its pixel data and
            with the Type 2 attributes it lacks, the others as they are (the report takes only their UIDs). The
            files without one are read.

    Raises:
        ValueError: the scan is not a DICOM series, a source file is missing or unreadable, or the files belong to
            several series, lack SOP/study UIDs, or do not name exactly one patient (no PatientID, or several:
            see :func:`_check_one_patient`; the message names the scan or file).
    """
    import pydicom

    scan = result.get("scan", "<scan>")
    if result.get("source_format") != "dicom-series":
        raise ValueError(
            f"CT scan {scan!r} is a {result.get('source_format') or 'non-DICOM'} input: a DICOM SR needs a DICOM "
            "series (patient, study and the instances it references)."
        )
    wanted = [s["source"] for s in result["slices"] if s.get("used")]
    wanted += [t["source"] for t in result.get("top_slices", []) if t["source"] not in wanted]
    out: dict[str, Any] = {}
    series = set()
    shared = set()  # ids of the given datasets returned as they are (no Type 2 attributes added to them)
    for path in wanted:
        given = None if headers is None else headers.get(path)
        if given is not None and out:
            ds = given
            shared.add(id(ds))
        elif given is not None:  # the first: a new dataset without the pixel data (Type 2 attributes added below)
            ds = pydicom.Dataset()
            for tag in given.keys():
                if tag < _PIXEL_DATA:
                    ds[tag] = given[tag]
        else:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as e:  # InvalidDicomError, OSError, EOFError, ...
                raise ValueError(f"cannot read the DICOM header of {path!r} for the SR of {scan!r}: {e}") from e
        for key in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(key):
                raise ValueError(f"DICOM file {path!r} has no {key}: it cannot be referenced by a DICOM SR.")
        series.add(str(ds.SeriesInstanceUID))
        out[path] = ds
    if len(series) > 1:
        raise ValueError(f"the slices of CT scan {scan!r} come from {len(series)} series {sorted(series)}; one is needed.")
    _check_one_patient(result, out, headers)
    for ds in out.values():  # Type 2 patient/study attributes the input lacks: empty (unknown), as DICOM has it
        if id(ds) in shared:
            continue
        for key in _TYPE2_COPIED:
            if key not in ds:
                setattr(ds, key, "")
    return out


def _check_one_patient(
    result: Mapping[str, Any], datasets: Mapping[str, Any], headers: Mapping[str, Any] | None = None
) -> None:
    """Refuse a report whose series does not name exactly one patient.

    Every file of the series counts (the skipped slices too: a series that mixes patients is not one patient's
    scan, whichever slices were used). A PACS files a report under the patient its ``PatientID`` names, so:

    - several PatientIDs: the report would be filed under one patient while referencing another's images;
    - no or an empty PatientID (Type 2, so a file may leave it empty): the archive would file the finding under
      no patient (an unidentified record, or a reconciliation by hand that may pick the wrong one). As with a
      missing StudyInstanceUID, no report is written: the scan's answer is still in the CSV rows.

    Raises:
        ValueError: no PatientID, or several (the message names the scan, the IDs and a file of each).
    """
    import pydicom

    scan = result.get("scan", "<scan>")
    ids: dict[str, list[str]] = {}
    for s in result["slices"]:
        path = s["source"]
        ds = datasets.get(path)
        if ds is None and headers is not None:
            ds = headers.get(path)
        if ds is None:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
            except Exception as e:  # InvalidDicomError, OSError, EOFError, ...
                raise ValueError(f"cannot read the DICOM header of {path!r} for the SR of {scan!r}: {e}") from e
        ids.setdefault(str(ds.get("PatientID") or "").strip(), []).append(os.path.basename(path))
    if len(ids) > 1:
        held = "; ".join(f"{k or '<empty>'!r} ({len(v)} files, e.g. {v[0]})" for k, v in sorted(ids.items()))
        raise ValueError(
            f"the files of CT scan {scan!r} carry {len(ids)} PatientIDs ({held}): one report cannot be about "
            "several patients, so no DICOM SR is written."
        )
    if "" in ids:
        raise ValueError(
            f"the files of CT scan {scan!r} have no PatientID (e.g. {ids[''][0]}): a report without one cannot be "
            "filed under its patient, so no DICOM SR is written."
        )


def _interval_note(result: Mapping[str, Any], n_bootstrap: int | None) -> str | None:
    """Why the result has no interval, or None when it has one."""
    n = int(result.get("n", result.get("slices_used", 0)) or 0)
    lo, hi = result.get("ci_low"), result.get("ci_high")
    if lo is not None and hi is not None and float(hi) > float(lo):
        return None
    if result.get("ci_note"):  # the aggregation says why
        return f"No interval: {result['ci_note']}."
    if n <= 1:
        return f"No interval: only {n} slice was classified, so there is nothing to resample."
    if n_bootstrap is not None and int(n_bootstrap) <= 0:
        return "No interval: the bootstrap over slices was turned off (n_bootstrap 0)."
    return "No interval: the bootstrap over slices gave no spread (all resampled top-k means were equal)."


def _calibration_text(result: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    """Whether the probability is calibrated: by a temperature the result says it applied, else not."""
    if result.get("temperature") is not None:
        return f"calibrated with the checkpoint's temperature T = {float(result['temperature']):.4g}"
    stored = model.get("temperature")
    if stored is not None and float(stored) != 1.0:  # T = 1 (the settings file's default) is no calibration
        return f"the network's output, not calibrated (the checkpoint's temperature T = {float(stored):.4g} is not applied)"
    return "the network's output, not calibrated"


def _network_text(model: Mapping[str, Any]) -> str:
    """The network, its input size and training stage; says when the input size and normalisation are defaults
    (a checkpoint without a settings file records neither)."""
    stage = model.get("stage") or "not recorded"
    size = f"{model.get('image_size')} px input"
    if model.get("settings_source") not in (None, "sidecar"):
        return (f"{model['network']}, {size}, stage {stage}; the checkpoint has no settings file, so the input size and "
                "the intensity normalisation are the defaults, not those the network was trained with")
    return f"{model['network']}, {size}, stage {stage}"


def build_scan_sr(
    result: Mapping[str, Any],
    datasets: Mapping[str, Any],
    model: Mapping[str, Any],
    threshold: float | Mapping[str, Any] = 0.5,
    n_bootstrap: int | None = None,
    positive_name: str = "COVID",
    series_number: int = SR_SERIES_NUMBER,
) -> Any:
    """Build the Comprehensive SR of one scan result (see the module docstring for its content).

    Args:
        result: a :class:`~mstl_monai.inferers.scan.ScanClassifier` result of a DICOM series.
        datasets: the headers of its source files (:func:`read_source_datasets`).
        model: the model (:func:`~mstl_monai.deploy.model_description`).
        threshold: the decision threshold: a number or ``{"value", "source"}``
            (:func:`~mstl_monai.networks.checkpoint.decision_threshold`).
        n_bootstrap: the bootstrap resamples behind the interval (to say why there is none; None: unknown).
        positive_name: the positive class's name (the checkpoint's ``class_names[positive_class]``).
        series_number: Series Number of the report.

    Returns:
        a ``highdicom.sr.ComprehensiveSR`` (a pydicom dataset) with new Series and SOP Instance UIDs.

    Raises:
        ValueError: a used or top slice has no header in ``datasets`` (the message names it).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from mstl_monai.networks.checkpoint import given_threshold

    thr = given_threshold(threshold)
    rel = hd.sr.RelationshipTypeValues
    missing = [s["source"] for s in result["slices"] if s.get("used") and s["source"] not in datasets]
    if missing:
        raise ValueError(f"no DICOM header given for the used slice(s) {missing[:3]} of {result.get('scan')!r}.")
    prob = float(result["probability"])
    suspected = prob > thr["value"]
    unit_1 = codes.UCUM.NoUnits
    slices_unit = hd.sr.CodedConcept(value="{slices}", scheme_designator="UCUM", meaning="slices")

    def text(key_or_code, value: str, relationship=rel.CONTAINS):
        name = _local(key_or_code) if isinstance(key_or_code, str) else key_or_code
        return hd.sr.TextContentItem(name=name, value=value, relationship_type=relationship)

    def num(name, value: float, unit, relationship=rel.CONTAINS):
        return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=relationship)

    def image(name, ds, relationship=rel.CONTAINS):
        return hd.sr.ImageContentItem(
            name=name,
            referenced_sop_class_uid=ds.SOPClassUID,
            referenced_sop_instance_uid=ds.SOPInstanceUID,
            relationship_type=relationship,
        )

    # -- findings ------------------------------------------------------------------------------------------------
    sources = {
        "checkpoint": "the checkpoint's, chosen on its validation split",
        "override": "given for this run",
        "given": "given for this run",
        "default": "0.5: none stored with the checkpoint",
    }
    where = sources.get(thr["source"], thr["source"])
    decision = "suspected" if suspected else "not_suspected"
    note = _interval_note(result, n_bootstrap)
    lo_hi = f"{float(result['ci_low']):.3f} to {float(result['ci_high']):.3f}" if note is None else ""
    interval = "" if note else f"; 95% bootstrap interval over slices {lo_hi}"
    stated = (
        f"{_LOCAL_CODES[decision][1]}: P({positive_name}) = {prob:.3f} {'>' if suspected else '<='} decision threshold "
        f"{thr['value']:.4g} ({where}){interval}. {result['slices_used']} of {result['n_slices']} slices classified; "
        "the others show too little lung."
    )
    findings = [
        hd.sr.CodeContentItem(name=codes.DCM.Finding, value=_local(decision), relationship_type=rel.CONTAINS),
        text("finding_text", stated),
        num(codes.DCM.Probability, prob, unit_1),
    ]
    if note is None:
        findings += [
            num(_local("ci_low"), float(result["ci_low"]), unit_1),
            num(_local("ci_high"), float(result["ci_high"]), unit_1),
        ]
    else:
        findings.append(text("ci_none", note))
    findings += [
        num(codes.DCM.ThresholdValue, float(thr["value"]), unit_1),
        text("threshold_source", where),
        num(_local("n_slices"), int(result["n_slices"]), slices_unit),
        num(_local("n_used"), int(result["slices_used"]), slices_unit),
        num(_local("n_skipped"), int(result["slices_skipped"]), slices_unit),
        text("aggregation", f"{result.get('aggregation')}: mean of the top {result.get('k')} of {result.get('n')} slice "
             f"probabilities; {_calibration_text(result, model)}"),
    ]
    used = [s for s in result["slices"] if s.get("used")]
    findings += [image(codes.DCM.SourceImage, datasets[s["source"]]) for s in used]
    for t in result.get("top_slices", []):
        ds = datasets.get(t["source"])
        if ds is None:
            raise ValueError(f"no DICOM header given for the top slice {t['source']!r} of {result.get('scan')!r}.")
        item = num(_local("slice_prob"), float(t["probability"]), unit_1)
        item.ContentSequence = hd.sr.ContentSequence([image(codes.DCM.BestIllustrationOfFinding, ds, rel.INFERRED_FROM)])
        findings.append(item)
    findings_box = hd.sr.ContainerContentItem(name=codes.DCM.Findings, relationship_type=rel.CONTAINS)
    findings_box.ContentSequence = hd.sr.ContentSequence(findings)

    # -- the model -----------------------------------------------------------------------------------------------
    training = model.get("training_data") or str(model.get("training_data_source"))  # "not recorded in model.pt.json"
    equipment = hd.sr.ContainerContentItem(name=codes.DCM.EquipmentIdentification, relationship_type=rel.CONTAINS)
    equipment.ContentSequence = hd.sr.ContentSequence(
        [
            text(codes.DCM.AlgorithmName, str(model["name"])),
            text(codes.DCM.AlgorithmVersion, f"{model['package']} {model['version']}"),
            text("weights_sha256", f"{model['weights_sha256']} ({model['weights_file']})"),
            text("training_data", str(training)),
            text("network", _network_text(model)),
        ]
    )

    # -- the report ----------------------------------------------------------------------------------------------
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[str(model["weights_sha256"])]),  # one UID per set of weights
        name="mstl-monai",
        manufacturer_name="mstl-monai contributors",
        model_name=str(model["network"])[:64],
    )
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    root = hd.sr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport, template_id=None)
    root.ContentSequence = hd.sr.ContentSequence(
        [*observer, findings_box, equipment, text("disclaimer", DISCLAIMER)]
    )
    evidence = [datasets[s["source"]] for s in used]
    evidence += [datasets[t["source"]] for t in result.get("top_slices", [])
                 if not any(datasets[t["source"]] is e for e in evidence)]  # by identity: Dataset == compares all
    # highdicom's constructor deep-copies the content tree, parses the copy back and searches it for the images it
    # references (most of the time of a report). The tree here is made of highdicom's own (checked) content items
    # and references exactly the evidence, so the document is made around the root container alone and the tree
    # is set afterwards: the same dataset (highdicom's reader checks it in the tests).
    shell = hd.sr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport, template_id=None)
    shell.ContentSequence = hd.sr.ContentSequence([])
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=shell,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mstl-monai",
        is_complete=True,
        is_final=False,  # a device's unverified reading
        is_verified=False,
        series_description="mstl-monai COVID-19 report - NOT FOR DIAGNOSTIC USE",
        software_versions=f"{model['package']} {model['version']}",
        manufacturer_model_name=str(model["network"])[:64],
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                designator=LOCAL_SCHEME, name="mstl-monai local codes", responsible_organization="mstl-monai contributors"
            )
        ],
    )
    sr.ContentSequence = root.ContentSequence
    sr._content = hd.sr.ContentSequence([root], is_root=True)  # what ``sr.content`` returns, as the constructor sets it
    return sr


def write_scan_sr(
    result: Mapping[str, Any],
    path: str | os.PathLike,
    model: Mapping[str, Any],
    threshold: float | Mapping[str, Any] = 0.5,
    n_bootstrap: int | None = None,
    positive_name: str = "COVID",
    datasets: Mapping[str, Any] | None = None,
) -> Path:
    """Build the SR of a scan result (:func:`build_scan_sr`) and write it atomically to ``path``.

    ``datasets`` (the source headers) are read from the files the result names when not given
    (:func:`read_source_datasets`). Returns ``path``.

    Raises:
        ValueError: the scan is not a DICOM series, or its files cannot be read (the message names it).
    """
    from mstl_monai.utils.io import atomic_write

    if datasets is None:
        datasets = read_source_datasets(result)
    sr = build_scan_sr(result, datasets, model, threshold, n_bootstrap=n_bootstrap, positive_name=positive_name)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        try:  # pydicom 3
            sr.save_as(f, enforce_file_format=True)
        except TypeError:  # pydicom 2 (the MONAI Label environment pins pydicom<3)
            sr.save_as(f, write_like_original=False)
    return path
