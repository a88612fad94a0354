#!/usr/bin/env python3
"""Writes the acceptance cases tests/cases/048-*.json onwards.

Run from anywhere: `python3 tests/cases/tools/build_cases.py`. The expected outcome of each case
is derived from the decision rules (notes: rules after issue 12), not from the implementation;
each description says what a naive reading would answer and why the rule answers otherwise.
The resources keep the shapes and codes of the public examples named in each case's `source`
(see lib.py); ids and dates are adapted so that one case's references line up.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from lib import *  # noqa: E402,F401,F403

OUT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))

SRC_MCODE = "HL7/fhir-mCODE-ig input/fsh/EX_ExtendedExample.fsh (primary-cancer-condition-jenny-m, tnm-pathologic-stage-group-jenny-m, tnm-pathologic-primary-tumor-category-jenny-m, cancer-related-surgical-procedure-jenny-m, us-core-condition-hypertension-jenny-m), EX_Basic.fsh (cancer-patient-john-anyperson, secondary-cancer-condition-brain-mets)"
SRC_USCORE = "HL7/US-Core input/examples/Observation-heart-rate.json, Observation-blood-pressure.json (vital-sign shape)"
SRC_CODEX = "HL7/codex-radiation-therapy input/fsh/instances/EX_RadiotherapyCoursePrescription.fsh (RadiotherapyCoursePrescription-04-Prostate: modalityAndTechnique, treatmentIntent, identifiers, category 1287742003); HL7/fhir-mCODE-ig input/fsh/SD_Radiotherapy.fsh (modality/technique are extensions of their own: absolute urls) and EX_ExtendedExample.fsh (technique 168524008 with electrons 45643008)"
SRC_SYNTHEA = "synthetichealth/synthea src/main/resources/modules/colorectal_cancer.json (Colorectal_Cancer_Stage_II: SNOMED 109838007; Colorectal_Cancer_Symptom_2: 6072007; Diagnostic_Colonoscopy_Procedure: 73761001)"
ADAPT = " Ids, dates and the patient are adapted so the references line up."

NAMES = {}


def name_for(n):
    people = [
        ("Anyperson", "John", "male", "1951-01-20"),
        ("Anyperson", "Eve", "female", "1955-05-20"),
        ("Everyman", "Adam", "male", "1962-02-05"),
        ("Mosley", "Jenny", "female", "1963-07-11"),
    ]
    return people[n % len(people)]


def base_noise(pid, n=4, start="2025-06-"):
    return [vital(pid, f"vs-{i}", i, f"{start}{10 + i:02d}") for i in range(n)]


def case(num, slug, description, source, pid_n, orders, conditions, procedures, observations, expect, not_iort=(), obs_extra=(), obs_total=None, compact=False):
    pid = f"pat-{num:03d}"
    name = name_for(pid_n) + (f"MRN-{num:03d}{pid_n:04d}",)
    req = request(pid, orders, conditions, procedures, observations, f"XBZ{num:03d}77{pid_n:04d}", name, obs_extra=obs_extra, obs_total=obs_total)
    dump(os.path.join(OUT, f"{num:03d}-{slug}.json"), description, source, req, expect, not_iort, compact=compact)


def P(num):
    return f"pat-{num:03d}"


def good_rectal_record(pid, t_focus_form="relative", margin_focus=True):
    """Rectal cancer pT4a (focused), involved margin, LAR, hypertension, vitals."""
    conds = [rectal(pid), hypertension(pid)]
    procs = [resection(pid, reason=ref("Condition", "rectal-ca")), colonoscopy(pid)]
    obs = [
        t_obs(pid, "tnm-pt", "pT", "pT4a", "2025-03-14", focus=ref("Condition", "rectal-ca", t_focus_form)),
        margin_finding(pid, "margin", True, "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca") if margin_focus else None),
    ] + base_noise(pid)
    return conds, procs, obs


def main():
    # ------------------------------------------------------------ 1a reference forms -> rectal
    n = 48
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.insert(0, synthea_condition(pid, "colon-ca", "109838007", "Overlapping malignant neoplasm of colon", "2025-01-20T10:03:00-07:00"))
    obs[0]["focus"] = [ref("Condition", "rectal-ca")]
    case(n, "reason-relative-rectal-while-synthea-colon-active", "Synchronous cancers: an active Synthea colon cancer (SNOMED 109838007, listed first) and the rectal cancer (C20/363351006, pT4a focused on it, involved margin focused on it). The order's reasonReference is relative `Condition/rectal-ca`. Rule 1a: the referenced Condition decides -> rectal met; T4 and margin are linked to it -> covered. A naive reading that takes the first current cancer (colon) would say not-covered; one that refuses to choose between two primaries would say conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_SYNTHEA + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 49
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid, t_focus_form="absolute")
    conds.append(breast_jenny(pid, status="active", onset="2024-11-02"))
    case(n, "reason-absolute-url-rectal", "The order's reasonReference is the absolute URL https://ehr.example.org/fhir/R4/Condition/rectal-ca (the Bundle's fullUrls are absolute on the same base); the T Observation's focus is absolute too. The patient also has an active breast cancer (mCODE jenny-m, SNOMED 353431000119107), so the links matter. Rule 1a resolves absolute references -> rectal; pT4a focused on it; involved margin -> covered. A naive reading that only matches `Condition/<id>` finds the reference unresolvable -> conditional (unknown indication)." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca", "absolute")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 50
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0]["meta"]["versionId"] = "3"
    case(n, "reason-versioned-history-rectal", "The order's reasonReference is versioned: https://ehr.example.org/fhir/R4/Condition/rectal-ca/_history/3 (the Condition's meta.versionId is 3). Rule 1a: a versioned reference names the same Condition -> rectal; pT4a and involved margin focused on it -> covered. A naive reading that compares the whole reference or takes the last path segment ('3') as the id finds nothing -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca", "versioned", "3")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 51
    pid = P(n)
    dx = rectal(pid, cid="dx-rectal", status="recurrence", text="Recurrent adenocarcinoma of rectum")
    for k in ("meta", "text", "identifier"):
        dx.pop(k)
    conds = [hypertension(pid), anxiety(pid)]
    procs = [resection(pid, pid_id="re-resection", date="2025-05-06T08:00:00-07:00", outcome=True), colonoscopy(pid)]
    obs = base_noise(pid, 6) + [lab_cea(pid, "cea", 7.4, "2025-04-20")]
    case(n, "reason-contained-recurrent-rectal", "The order carries its indication as a contained Condition (`#dx-rectal`: C20/363351006, clinicalStatus recurrence) and its reasonReference is `#dx-rectal`; the problem list prefetch holds only hypertension and anxiety. Rule 1a: a contained Condition is referenced like any other -> rectal met; recurrent (rule 2) -> met; margins from the rectal re-resection Procedure.outcome = involved (370109009) -> positive -> covered. A naive reading that ignores `contained` has no resolvable reason and no cancer in the record -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "dx-rectal", "contained")], contained=[dx])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    # ------------------------------------------------------------ 1a reference forms -> breast
    for n, form, status, slug, extra in [
        (52, "relative", "remission", "reason-relative-breast-in-remission-while-rectal-qualifies", "The referenced breast Condition is in remission exactly as mCODE publishes jenny-m: a referenced Condition that is usable (verificationStatus confirmed) decides whatever its clinicalStatus, so the order is for breast cancer. A naive reading that drops remission Conditions first would fall back to the rectal cancer -> covered."),
        (53, "absolute", "active", "reason-absolute-breast-while-rectal-qualifies", "A naive reading that cannot resolve absolute URLs would fall back to the patient's current cancers, prefer rectal and answer covered."),
        (54, "versioned", "active", "reason-versioned-breast-while-rectal-qualifies", "A naive reading that cannot resolve `_history` references would fall back to the rectal cancer -> covered."),
        (55, "contained", "active", "reason-contained-breast-while-rectal-qualifies", "The breast Condition is contained in the order (`#breast-ca`), not in the problem list. A naive reading that ignores `contained` falls back to the rectal cancer -> covered."),
    ]:
        pid = P(n)
        conds, procs, obs = good_rectal_record(pid)
        br = breast_jenny(pid, status=status, onset="2024-10-02")
        contained = None
        if form == "contained":
            for k in ("meta", "text"):
                br.pop(k)
            contained = [br]
        else:
            conds.insert(0, br)
        order = iort_cpt(pid, oid="iort-xray", reasons=[ref("Condition", "breast-ca", form)], contained=contained, code=("77424", "Intraoperative radiation treatment delivery, x-ray, single treatment session"))
        order["code"]["text"] = "IORT, x-ray (INTRABEAM), single session"
        order["bodySite"] = [cc(SCT, "80248007", "Left breast structure (body structure)")]
        case(n, slug, f"The order's reasonReference ({form} form) is the breast cancer of mCODE's example patient (SNOMED 353431000119107, {status}), while the patient also has a qualifying rectal cancer (pT4a focused, involved margin). Rule 1a: the referenced Condition decides and is not rectal -> not met -> not-covered. {extra}" + ADAPT,
             SRC_MCODE + "; " + SRC_USCORE, n, [order], conds, procs, obs, {"ServiceRequest/iort-xray": "not-covered"})

    # ------------------------------------------------------------ 1a absent / non-cancer
    n = 56
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    case(n, "reason-reference-absent-from-record", "The order's reasonReference `Condition/dx-20250618` is not in the Condition prefetch (and there is no fhirServer to fetch it). The record holds a qualifying rectal cancer (pT4a, involved margin). Rule 1a: an unresolvable referenced Condition makes the indication unknown, and the service must not fall back to the patient's other cancers -> conditional (document the indication). A naive fallback answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "dx-20250618")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "conditional"})

    n = 57
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(synthea_condition(pid, "rectal-bleeding", "6072007", "Bleeding from anus", "2024-08-26T11:20:00-07:00"))
    case(n, "reason-non-cancer-diagnosis", "The order's reasonReference is a Synthea symptom Condition 'Bleeding from anus' (SNOMED 6072007), not a cancer; the patient also has a qualifying rectal cancer (pT4a, involved margin). Rule 1a: when every referenced usable Condition is something else, even a non-cancer diagnosis, the indication is not met -> not-covered. Naive readings: 'not a cancer, ignore it and fall back' -> covered, or 'unrecognised -> unknown' -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_SYNTHEA + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-bleeding")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    # ------------------------------------------------------------ 1d code systems
    n = 58
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0]["code"] = multi([(ICD10CM_OID, "C20", "Malignant neoplasm of rectum")], "Rectal adenocarcinoma")
    case(n, "rectal-icd10cm-by-oid", "The rectal cancer Condition is coded only with ICD-10-CM C20 under the OID system urn:oid:2.16.840.1.113883.6.90 (as CDA-derived EHR data carries it); reasonReference points at it; pT4a and involved margin are focused on it. Rule 1d: the OID is ICD-10-CM -> rectal -> covered. A naive reading matching only http://hl7.org/fhir/sid/icd-10-cm would call it an unrecognised code -> not-covered (1a: referenced but something else)." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 59
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0]["code"] = multi([(ICD10_WHO, "C20", "Malignant neoplasm of rectum")], "Rectal adenocarcinoma")
    order = iort_cpt(pid, reasons=None)
    order["reasonCode"] = [{"coding": [{"system": ICD10_WHO, "code": "C20", "display": "Malignant neoplasm of rectum"}], "text": "Malignant neoplasm of rectum"}]
    case(n, "rectal-who-icd10-reason-code-and-condition", "Both the order's reasonCode (as the CodeX course prescription example writes reasonCode + text) and the patient's cancer Condition use WHO ICD-10 (http://hl7.org/fhir/sid/icd-10) C20. No reasonReference. Rule 1b/1d: WHO C20 is rectal -> met; pT4a and involved margin focused on the Condition -> covered. A naive reading that only knows the ICD-10-CM URI sees no cancer -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_CODEX + "; " + SRC_USCORE, n, [order], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 60
    pid = P(n)
    conds = [synthea_condition(pid, "colon-ca", "109838007", "Overlapping malignant neoplasm of colon", "2025-01-20T10:03:00-07:00"), hypertension(pid)]
    procs = [resection(pid, pid_id="colectomy", code=("43075005", "Partial resection of colon"), reason=ref("Condition", "colon-ca"), body_site=False, outcome=True), colonoscopy(pid)]
    obs = [t_obs(pid, "tnm-pt", "pT", "pT4a", "2025-02-04", focus=ref("Condition", "colon-ca"))] + base_noise(pid)
    case(n, "synthea-colon-109838007-not-covered", "The patient's only cancer is Synthea's colon cancer (SNOMED 109838007 'Overlapping malignant neoplasm of colon', encounter-diagnosis); partial colectomy (43075005) with outcome involved; pT4a focused on it; no reason on the order. Rule 1c/1d: a known other cancer -> rectal not met -> not-covered. A naive reading that only recognises rectal codes treats it as 'no cancer documented' -> conditional." + ADAPT,
         SRC_SYNTHEA + "; " + SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    # ------------------------------------------------------------ 1c current vs history
    n = 61
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0] = rectal(pid, status="resolved", onset="2016-04-11", abatement="2017-10-30", text="Adenocarcinoma of rectum, treated")
    conds.append(breast_jenny(pid, status="active", onset="2025-02-14"))
    obs[0]["effectiveDateTime"] = "2016-05-02"
    obs[1]["effectiveDateTime"] = "2016-05-02T15:00:00-07:00"
    obs[1]["issued"] = "2016-05-02T15:00:00-07:00"
    procs[0]["performedDateTime"] = "2016-05-01T08:00:00-07:00"
    case(n, "resolved-rectal-active-breast-no-reason", "No reason on the order. The rectal cancer (pT4a, involved margin, 2016) is resolved (abatement 2017); the current cancer is an active breast cancer (mCODE jenny-m code). Rule 1c: resolved Conditions are history and do not stand in; the current primary is breast -> not met -> not-covered. A naive 'any rectal cancer on the problem list' reading answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    n = 62
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0] = rectal(pid, status="remission", onset="2022-01-05", text="Adenocarcinoma of rectum in remission")
    case(n, "rectal-in-remission-only", "No reason on the order. The only cancer is a rectal cancer in remission (pT4a and involved margin focused on it). Rule 1c: remission is history; no current primary cancer -> indication unknown -> conditional (document a current cancer). A naive reading counting any rectal Condition answers covered; one treating 'no current rectal' as 'not rectal' answers not-covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "conditional"})

    n = 63
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(liver_mets(pid))
    obs[0].pop("focus")
    obs[1].pop("focus")
    case(n, "liver-metastasis-c78-7-unlinked-t4-counts", "Rectal primary (C20) plus an mCODE SecondaryCancerCondition of the liver (ICD-10-CM C78.7 + SNOMED 94381002, relatedPrimaryCancerCondition -> rectal). The pT4a Observation and the involved-margin Observation are linked to nothing. Rule 2/3: unlinked evidence counts when the patient has exactly one current primary cancer, and a metastasis is not another primary -> T4 and positive margin count -> covered. A naive count of two current cancers discards the unlinked evidence -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 64
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(liver_mets(pid, icd=False, profile=False))
    obs[0].pop("focus")
    obs[1].pop("focus")
    case(n, "liver-metastasis-snomed-only-no-reason-unlinked-t4", "No reason on the order. Rectal primary plus a liver metastasis coded only with SNOMED 94381002 (no ICD-10-CM, no mCODE profile: a plain US Core problem). pT4a and the involved margin are unlinked. Rule 1c: the metastasis does not stand in and is not a second primary -> rectal is the one current primary; unlinked T4 and margin count -> covered. Naive: two current cancers -> unlinked evidence ignored -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    # ------------------------------------------------------------ 2 staging linkage
    n = 65
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0]["stage"] = [{"summary": cc(SCT, "1222806003", "American Joint Committee on Cancer stage IIIC (qualifier value)"), "assessment": [ref("Observation", "tnm-stage-group")], "type": AJCC8}]
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    tpt = t_obs(pid, "tnm-pt", "pT", "pT4a", "2025-03-14")
    sg = stage_group(pid, "tnm-stage-group", [ref("Observation", "tnm-pt"), ref("Observation", "tnm-pn")], "2025-03-14")
    obs = [sg, tpt, n_obs(pid, "tnm-pn", "2025-03-14"), obs[1]] + obs[2:]
    case(n, "stage-assessment-to-stage-group-to-t4", "Two current primaries (rectal, breast). The rectal Condition's stage.assessment -> a pathologic stage group (SNOMED 399588009, no focus) whose hasMember includes a pT4a Observation without focus. Rule 2: Condition.stage.assessment -> stage group -> hasMember T counts for that cancer -> T4 met; involved margin focused on rectal -> covered. A naive reading that only follows a T Observation's own focus (or stage.assessment one level deep) finds an unlinked T4 with two primaries -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 66
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    tct = t_obs(pid, "tnm-ct", "cT", "cT4b", "2024-10-01")
    sg = stage_group(pid, "tnm-clinical-stage-group", [ref("Observation", "tnm-ct")], "2024-10-01", focus=ref("Condition", "rectal-ca"), kind="clinical", value=("1222769001", "American Joint Committee on Cancer stage IIB (qualifier value)"))
    obs = [sg, tct, obs[1]] + obs[2:]
    case(n, "stage-group-focus-to-condition-hasmember-t4", "Two current primaries (rectal, breast). The rectal Condition has no stage element; a clinical stage group (SNOMED 399537006) has focus = Condition/rectal-ca (mCODE STU3 shape of tnm-clinical-stage-group-jenny-m) and hasMember a cT4b Observation without focus. Rule 2: a stage group focused on the cancer lends its members -> T4 met; involved margin focused on rectal -> covered. Naive: the T Observation itself is unlinked and there are two primaries -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 67
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid, t_focus_form="absolute")
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    obs[0] = t_obs(pid, "tnm-t", "T", "pT4b", "2025-03-14", focus=ref("Condition", "rectal-ca", "absolute"))
    obs[1]["focus"] = [ref("Condition", "rectal-ca", "versioned", "1")]
    case(n, "t-observation-own-focus-absolute", "Two current primaries. The T Observation (SNOMED 78873005 T category = pT4b) carries its own focus as an absolute URL; the margin Observation's focus is a versioned URL. Rule 2/3: a T or margin Observation whose focus is the cancer counts, whatever the reference form -> covered. Naive: focus not matched -> unlinked with two primaries -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 68
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    obs[0] = t_obs(pid, "tnm-t-legacy", "loinc-c", "T4-old", "2023-11-20", focus=ref("Condition", "rectal-ca"))
    obs[0]["meta"]["profile"] = [USCORE + "us-core-observation-clinical-result"]
    obs[0].pop("method")
    case(n, "older-snomed-t4-finding-65565005", "The T category is an older-style Observation (LOINC 21905-5) whose value is the SNOMED finding 65565005 'T4 category (finding)', as Synthea and older systems write T; focus = the rectal cancer; involved margin. Rule 2: older SNOMED T4 findings count -> covered. Naive (AJCC/SNOMED cT4/pT4 qualifiers only) -> T unknown -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 69
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    obs[0].pop("focus")
    case(n, "unlinked-t4-with-two-primaries-conditional", "Two current primary cancers (rectal, active breast). The only T Observation (pT4a) is linked to nothing (no focus, no stage group); the involved margin is focused on the rectal cancer; reasonReference = rectal. Rule 2: an unlinked T counts only when the patient has exactly one current primary -> T unknown; not recurrent -> conditional. A naive reading counting any T4 answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "conditional"})

    n = 70
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    obs[0] = t_obs(pid, "tnm-pt-rectal", "pT", "pT3", "2025-03-14", focus=ref("Condition", "rectal-ca"))
    sg = stage_group(pid, "tnm-stage-group-breast", [ref("Observation", "tnm-pt-breast")], "2025-01-10", focus=ref("Condition", "breast-ca"))
    tb = t_obs(pid, "tnm-pt-breast", "pT", "pT4b", "2025-01-10")
    obs = [sg, tb] + obs
    case(n, "stage-group-of-other-cancer-holds-t4", "Two current primaries; reasonReference = rectal. The rectal cancer has pT3 (focused). A pathologic stage group focused on the breast cancer has hasMember a pT4b Observation without focus. Rule 2: a T Observation in a stage group focused on another cancer never counts -> only T3, not recurrent -> T not met -> not-covered (involved margin notwithstanding). A naive reading that takes any T4 (or treats the member as unlinked) answers covered or conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    # ------------------------------------------------------------ 3 margins
    for n, slug, value, unit, comp, expect, text in [
        (71, "margin-distance-0-08-cm-positive", 0.08, "cm", None, "covered", "0.08 cm = 0.8 mm <= 1 mm -> positive -> covered. A reading that only accepts mm calls the distance unreadable -> conditional."),
        (72, "margin-distance-1500-um-close", 1500, "um", None, "covered", "1500 um = 1.5 mm (> 1, <= 2 mm) -> close -> covered. A reading that takes the number as mm calls 1500 clear -> not-covered."),
        (73, "margin-distance-less-than-1-mm-positive", 1, "mm", "<", "covered", "`<1 mm` is read conservatively as positive -> covered. A reading that drops comparator values -> conditional."),
        (74, "margin-distance-less-than-3-mm-ignored", 3, "mm", "<", "conditional", "`<3 mm` could be positive, close or clear: nothing certain, ignored -> margins unknown -> conditional. A reading that ignores the comparator calls 3 mm clear -> not-covered."),
        (75, "margin-distance-0-3-cm-clear", 0.3, "cm", None, "not-covered", "0.3 cm = 3 mm > 2 mm -> clear -> not-covered. A reading that takes the number as mm calls 0.3 positive -> covered."),
    ]:
        pid = P(n)
        conds, procs, obs = good_rectal_record(pid)
        obs[1] = margin_distance(pid, "margin-distance", value, unit, "2025-03-14T16:05:00-07:00", comparator=comp, focus=ref("Condition", "rectal-ca"))
        case(n, slug, f"Rectal cancer pT4a (focused); the margin is a distance to closest margin (LOINC 33737-8, UCUM {unit}) of {comp or ''}{value} {unit}, focused on the cancer. Rule 3: {text}" + ADAPT,
             SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": expect})

    n = 76
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    procs[0].pop("outcome", None)
    procs[0].pop("reasonReference")
    obs[1] = margin_finding(pid, "margin", True, "2025-03-14T16:05:00-07:00", part_of=ref("Procedure", "lar", "absolute"))
    case(n, "margin-part-of-resection", "Two current primaries; reasonReference = rectal; pT4a focused on rectal. The involved-margin Observation has no focus but partOf -> the low anterior resection (absolute URL), which has no outcome. Rule 3: margin Observations count when partOf points at the resection -> positive -> covered. Naive: unlinked margin with two primaries -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 77
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    procs[0].pop("reasonReference")
    obs[1] = margin_finding(pid, "margin", True, "2025-03-14T16:05:00-07:00", derived_from=ref("Procedure", "lar"))
    case(n, "margin-derived-from-resection", "Two current primaries; reasonReference = rectal; pT4a focused on rectal. The involved-margin Observation carries derivedFrom -> Procedure/lar (the resection; R4 lists other target types for derivedFrom, but EHR pathology feeds write it this way and rules.md names derivedFrom). Rule 3 -> positive -> covered. Naive: unlinked margin with two primaries -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 78
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    procs[0] = resection(pid, pid_id="apr", code=("45110", "Proctectomy; complete, combined abdominoperineal, with colostomy"), system=CPT, reason=ref("Condition", "rectal-ca", "absolute"), outcome=True, body_site=False, date="2025-03-20T07:30:00-07:00")
    obs = [obs[0]] + obs[2:]
    case(n, "resection-by-reason-reference-outcome-involved", "The margin is documented only as the outcome (370109009 involved) of an abdominoperineal proctectomy coded CPT 45110, with no bodySite, whose reasonReference is the rectal cancer (absolute URL). Rule 3: a procedure whose reasonReference is the cancer is a margin source -> positive; pT4a focused -> covered. A reading that only knows SNOMED rectal-resection codes or bodySite rectum finds no margin -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 79
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    prelim = margin_finding(pid, "margin-prelim", True, "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"), status="preliminary", issued="2025-03-14T16:05:00-07:00", note="Frozen section: tumor at inked circumferential margin.")
    amended = margin_finding(pid, "margin-final", False, "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"), status="amended", issued="2025-03-18T11:40:00-07:00", note="Amended after permanent sections: circumferential margin uninvolved (tumor 4 mm from margin).")
    obs = [obs[0], prelim, amended] + obs[2:]
    case(n, "amended-margin-supersedes-preliminary-same-date", "Two margin Observations for the same specimen time (effective 2025-03-14T16:05): a preliminary frozen-section 'involved' and an amended 'uninvolved' issued four days later. Rule 3: an amended report supersedes a preliminary one of the same date -> clear -> not-covered (pT4a notwithstanding). Treating them as a true tie (worse status wins) answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    n = 80
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    procs[0]["outcome"] = cc(SCT, "370109009", "Surgical margin involved by tumor (finding)")
    procs.append(resection(pid, pid_id="re-excision", code=("314610005", "Transanal excision of neoplasm of rectal submucosa (procedure)"), date="2025-06-02T08:15:00-07:00", reason=ref("Condition", "rectal-ca")))
    obs[1]["effectiveDateTime"] = "2025-03-12T12:00:00-07:00"
    obs[1]["issued"] = "2025-03-13T09:00:00-07:00"
    clear = margin_finding(pid, "margin-reexcision", False, "2025-06-03T14:20:00-07:00", focus=ref("Condition", "rectal-ca"), part_of=ref("Procedure", "re-excision"))
    obs.insert(2, clear)
    case(n, "later-clear-supersedes-earlier-involved", "The resection of 2025-03-12 left an involved margin (Procedure.outcome and a margin Observation); the re-excision of 2025-06-02 has a margin Observation 'uninvolved' (2025-06-03), months later. Rule 3: the most recent assessment wins -> clear -> not-covered (pT4a notwithstanding). 'Any involved margin' reading answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    n = 81
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    undated = margin_finding(pid, "margin-undated", True, "2025-01-01", focus=ref("Condition", "rectal-ca"))
    for k in ("effectiveDateTime", "issued"):
        undated.pop(k)
    obs[1] = margin_distance(pid, "margin-distance", 4.5, "mm", "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"))
    obs.insert(1, undated)
    case(n, "undated-involved-margin-is-oldest", "An involved margin Observation with no effective time and no issued (a migrated record) and a dated distance to closest margin of 4.5 mm (clear, 2025-03-14). Rule 3: undated assessments are the oldest -> the dated clear one is the most recent -> not-covered. Reading the undated one as newest (or worst-wins) answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    # ------------------------------------------------------------ 4 IORT orders
    MT = MCODE + "mcode-radiotherapy-modality-and-technique"

    def codex_course(pid, oid, technique, reasons):
        return {
            "resourceType": "ServiceRequest",
            "id": oid,
            "meta": {"versionId": "1", "lastUpdated": "2025-07-01T17:10:41.050+00:00", "profile": ["http://hl7.org/fhir/us/codex-radiation-therapy/StructureDefinition/codexrt-radiotherapy-course-prescription"]},
            "extension": [
                {"url": MCODE + "mcode-procedure-intent", "valueCodeableConcept": {"coding": [{"system": SCT, "code": "373808002", "display": "Curative - procedure intent"}], "text": "Curative"}},
                {
                    "url": MT,
                    "extension": [
                        {"url": MCODE + "mcode-radiotherapy-modality", "valueCodeableConcept": cc(SCT, "45643008", "Teleradiotherapy using electrons (procedure)")},
                        {"url": MCODE + "mcode-radiotherapy-technique", "valueCodeableConcept": cc(SCT, technique[0], technique[1])},
                    ],
                },
            ],
            "identifier": [
                {"use": "usual", "system": "http://example.com/varian/fhir/identifier/radiotherapyCourseId", "value": "Rectum-IOERT"},
                {"use": "official", "system": "urn:dicom:uid", "value": "urn:oid:2.16.124.113543.1154777499.30246.19789.3503430456.7"},
            ],
            "status": "draft",
            "intent": "original-order",
            "category": [cc(SCT, "1287742003", "Radiotherapy (procedure)")],
            "code": cc(SCT, "1217123003", "Radiotherapy course of treatment (regime/therapy)"),
            "subject": {"reference": f"Patient/{pid}", "display": "Eve Anyperson"},
            "authoredOn": "2025-07-01T00:00:00-07:00",
            "requester": {"reference": "Practitioner/pract-ramirez", "display": "Elena Ramirez, MD"},
            "reasonCode": [{"coding": [{"system": ICD10CM, "code": "C20", "display": "Malignant neoplasm of rectum"}], "text": "Malignant neoplasm of rectum"}],
            "reasonReference": reasons,
            "bodySite": [{"coding": [{"system": SCT, "code": "34402009", "display": "Rectum structure (body structure)"}], "text": "Rectum"}],
            "insurance": [{"reference": f"Coverage/cov-{pid}"}],
        }

    n = 82
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    course = codex_course(pid, "rt-course-ioert", ("168524008", "Radiotherapy - intraoperative control (procedure)"), [ref("Condition", "rectal-ca")])
    case(n, "codex-course-absolute-subextension-urls", "The order is a CodeX RadiotherapyCoursePrescription ServiceRequest (SNOMED 1217123003, intent original-order, category 1287742003, treatmentIntent, Varian course id and DICOM UID identifiers) whose mCODE modality-and-technique extension names its sub-extensions by their ABSOLUTE urls (mcode-radiotherapy-modality = electrons 45643008, mcode-radiotherapy-technique = 168524008 IORT), as the IG publisher renders them. Rule 4: it is an IORT order. Record: rectal pT4a, involved margin -> covered. A reading that only accepts the short `technique` url sees no IORT order -> no card." + ADAPT,
         SRC_CODEX + "; " + SRC_MCODE + "; " + SRC_USCORE, 1, [course], conds, procs, obs, {"ServiceRequest/rt-course-ioert": "covered"})

    n = 83
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    order = iort_cpt(pid, oid="iort-pcs", reasons=[ref("Condition", "rectal-ca")])
    order["code"] = {"coding": [{"system": PCS, "code": "DDY7CZZ", "display": "Intraoperative Radiation Therapy (IORT) of Rectum"}], "text": "IORT rectum"}
    case(n, "iort-route-icd10pcs-ddy7czz", "The order is coded only with ICD-10-PCS DDY7CZZ (Other radiation, rectum, intraoperative radiation therapy: 5th character C). Rule 4: an IORT order. Record: rectal pT4a, involved margin -> covered. A reading that only knows the beam tables' 7th-character-0 form sees no IORT order -> no card.",
         SRC_MCODE + "; " + SRC_USCORE, n, [order], conds, procs, obs, {"ServiceRequest/iort-pcs": "covered"})

    n = 84
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    med = {
        "resourceType": "MedicationRequest",
        "id": "capecitabine",
        "meta": {"profile": [CRD + "profile-medicationrequest"]},
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "200328", "display": "capecitabine 500 MG Oral Tablet"}], "text": "Capecitabine 500 mg tablet"},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/enc-{pid}"},
        "authoredOn": "2025-07-01T10:14:00-07:00",
        "requester": {"reference": "Practitioner/pract-ramirez", "display": "Elena Ramirez, MD"},
        "reasonReference": [ref("Condition", "rectal-ca")],
        "dosageInstruction": [{"text": "825 mg/m2 orally twice daily on radiation days", "route": cc(SCT, "26643006", "Oral use")}],
        "insurance": [{"reference": f"Coverage/cov-{pid}"}],
    }
    vmat = codex_course(pid, "ebrt-course", ("1156530009", "Volumetric Modulated Arc Therapy (procedure)"), [ref("Condition", "rectal-ca")])
    vmat["extension"][1]["extension"][0]["valueCodeableConcept"] = cc(SCT, "1156506007", "External beam radiation therapy using photons (procedure)")
    iort = iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])
    case(n, "crd-order-sign-medication-and-ebrt-beside-iort", "A Da Vinci CRD order-sign call with three draft orders: the IORT ServiceRequest (CPT 77425, CRD profile-servicerequest), a CRD MedicationRequest (capecitabine) and a CodeX EBRT course (1217123003, photons + VMAT 1156530009, absolute sub-extension urls). Only the IORT order gets a card and a coverage-information action (covered: rectal pT4a, involved margin); the MedicationRequest and the VMAT course are not IORT. Naive readings: act on every ServiceRequest coded 1217123003, or on every order." + ADAPT,
         SRC_CODEX + "; " + SRC_MCODE + "; " + SRC_USCORE, n, [med, iort, vmat], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"}, not_iort=["MedicationRequest/capecitabine", "ServiceRequest/ebrt-course"])

    # ------------------------------------------------------------ 5 EHR-shaped Bundles
    n = 85
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    obs = obs + [lab_cea(pid, f"cea-{i}", 3.1 + i, f"2025-0{i + 1}-15") for i in range(4)]
    case(n, "observations-bundle-with-outcome-entry", "The EHR ignored the code filter of the Observation query and says so in an OperationOutcome entry (search.mode outcome, 'parameters ... ignored: code'); the Bundle holds vitals and CEA labs beside pT4a and the involved margin. Rule 5: the outcome entry is not a record resource and the Bundle is assessed as is -> covered. A reading that rejects the Bundle (unknown resource type / OperationOutcome = failure) answers indeterminate or conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"}, obs_extra=[outcome()])

    n = 86
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    relevant = [
        t_obs(pid, "tnm-pt", "pT", "pT4a", "2025-03-14", focus=ref("Condition", "rectal-ca", "absolute")),
        margin_distance(pid, "margin-distance", 0.07, "cm", "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca")),
    ]
    vitals = []
    for i in range(998):
        day = f"2025-{1 + (i // 170):02d}-{1 + (i % 28):02d}"
        vitals.append(vital(pid, f"vs-{i:04d}", i, day))
    # relevant ones in the middle of the page, as a server orders by _lastUpdated
    page = vitals[:500] + relevant[:1] + vitals[500:750] + relevant[1:] + vitals[750:]
    case(n, "observation-page-of-1000-with-outcome", "The Observation prefetch is one page of exactly 1,000 matching resources (998 US Core vital signs: heart rate, respiratory rate, temperature, weight, SpO2, blood pressure; plus the pT4a focused on the rectal cancer and a distance to closest margin of 0.07 cm) and an OperationOutcome entry (search.mode outcome) saying the code parameter was ignored. Rule 5: a page of 1,000 resources plus an outcome entry is normal and must be assessed -> rectal, T4, positive -> covered. A reading that counts the outcome entry toward the 1,000-entry limit answers indeterminate; one that drops the page answers conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, page, {"ServiceRequest/iort-electrons": "covered"}, obs_extra=[outcome()], obs_total=1000, compact=True)

    n = 87
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    other = "pat-4471"
    oc = rectal(other, cid="rectal-ca-4471", status="recurrence")
    om = margin_finding(other, "margin-4471", True, "2025-06-20T10:00:00-07:00")
    op = resection(other, pid_id="lar-4471", date="2025-06-19T08:00:00-07:00", outcome=True)
    obs[1] = margin_finding(pid, "margin", False, "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"))
    obs[0]["focus"] = [ref("Condition", "rectal-ca")]
    obs.insert(2, om)
    conds.insert(0, oc)
    procs.insert(0, op)
    case(n, "other-patient-in-bundles-newer-involved-margin", "The searchset Bundles also carry another patient's resources (Patient/pat-4471: a recurrent rectal cancer, a newer involved margin Observation with no focus, a newer resection with outcome involved). This patient: rectal pT4a, own margin uninvolved (2025-03-14). Rule 5: other patients' resources are ignored -> clear -> not-covered. Using them would make the newer involved margin win -> covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    # ------------------------------------------------------------ more rule edges
    n = 88
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0].pop("clinicalStatus")
    conds[0]["category"] = [cc(CONDCAT, "encounter-diagnosis", "Encounter Diagnosis")]
    conds[0]["meta"]["profile"] = [MCODE + "mcode-primary-cancer-condition", USCORE + "us-core-condition-encounter-diagnosis"]
    conds[0]["encounter"] = {"reference": "Encounter/enc-onc-2024-09-18"}
    case(n, "rectal-without-clinical-status-is-current", "No reason on the order. The rectal cancer is an encounter diagnosis without clinicalStatus (allowed for encounter-diagnosis in US Core); pT4a and involved margin are focused on it. Rule 1c: an absent clinicalStatus counts as current -> rectal is the current primary -> covered. A naive reading that requires clinicalStatus active finds no current cancer -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 89
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    order = iort_cpt(pid)
    order["reasonCode"] = [{"coding": [{"system": ICD10CM, "code": "Z51.0", "display": "Encounter for antineoplastic radiation therapy"}], "text": "Radiation therapy"}]
    case(n, "reason-code-z51-0-ignored-falls-to-conditions", "The order's only reason is reasonCode ICD-10-CM Z51.0 (encounter for antineoplastic radiation therapy), no reasonReference. Rule 1b: codes that are not cancers are ignored, so the patient's current cancer stands in (1c): rectal, pT4a, involved margin -> covered. A naive reading that lets any reasonCode decide answers not-covered (not rectal)." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [order], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 90
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    obs[0] = t_obs(pid, "tnm-pt", "pT", "pT3", "2025-03-14", focus=ref("Condition", "rectal-ca"))
    conds.append(breast_jenny(pid, status="recurrence", onset="2018-03-16"))
    case(n, "recurrence-of-other-cancer-not-counted", "reasonReference = rectal cancer (active, pT3 focused, involved margin). The patient's breast cancer (mCODE jenny-m code) has clinicalStatus recurrence. Rule 2: 'recurrent' is the order's cancer's clinicalStatus; another cancer's recurrence does not count -> T3, not recurrent -> not-covered. A naive 'any recurrent cancer Condition' reading answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "not-covered"})

    n = 91
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    r1 = margin_finding(pid, "r-class", True, "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"))
    r1["code"] = cc(LOINC, "84892-9", "Residual tumor classification [Type] in Cancer specimen")
    r1["valueCodeableConcept"] = cc(SCT, "1222639002", "American Joint Committee on Cancer R1 (qualifier value)")
    r1["text"] = narrative("Residual tumor: R1 (microscopic)")
    obs[1] = r1
    case(n, "residual-tumor-r1-positive", "The margin is documented only as a residual tumor classification (LOINC 84892-9) of R1 (SNOMED 1222639002, microscopic residual tumor), focused on the rectal cancer; pT4a. Rule 3: R1 is a positive margin -> covered. A reading that only knows the margin-finding observable 395536008 or distances -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 92
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    clear = margin_finding(pid, "margin-finding", False, "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"))
    close = margin_distance(pid, "margin-distance", 1.8, "mm", "2025-03-14T16:05:00-07:00", focus=ref("Condition", "rectal-ca"))
    obs = [obs[0], clear, close] + obs[2:]
    case(n, "true-tie-worse-status-wins", "Two margin assessments of the same report (both final, same effective time 2025-03-14T16:05): the finding 'uninvolved' (no tumor at ink) and a distance to closest margin of 1.8 mm (close). Rule 3: on a true tie the worse status wins -> close; pT4a -> covered. A naive reading that takes the first (or the categorical) one answers not-covered (clear)." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 93
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds.append(breast_jenny(pid, status="active", onset="2024-12-01", stage=False))
    tpt = t_obs(pid, "tnm-pt", "pT", "pT4b", "2025-03-14")
    tpt["_mode"] = "include"
    conds[0]["stage"] = [{"summary": cc(SCT, "1222806003", "American Joint Committee on Cancer stage IIIC (qualifier value)"), "assessment": [ref("Observation", "tnm-stage-group")], "type": AJCC8}]
    sg = stage_group(pid, "tnm-stage-group", [ref("Observation", "tnm-pt", "absolute")], "2025-03-14")
    obs = [sg, obs[1]] + obs[2:] + [tpt]
    case(n, "t-member-arrives-as-include-entry", "Two current primaries. The rectal Condition's stage.assessment names a stage group (search match, hasMember as an absolute URL); its pT4b member arrives at the end of the Bundle as an `_include` entry (search.mode include), as servers answer `_include=Observation:has-member`. Rule 5: only outcome entries are not record resources, included ones are -> T4 via the stage group -> covered (involved margin focused). Reading only `match` entries -> conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    n = 94
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0] = rectal(pid, status="relapse", onset="2021-06-01", text="Adenocarcinoma of rectum, relapsed")
    obs = [margin_distance(pid, "margin-distance", 1.2, "mm", "2025-05-02T13:00:00-07:00", focus=ref("Condition", "rectal-ca"))] + obs[2:]
    case(n, "relapse-counts-as-current-and-recurrent", "No reason on the order. The only cancer is rectal with clinicalStatus relapse; no T category anywhere; distance to closest margin 1.2 mm (close). Rule 1c: relapse is current; rule 2: relapse is recurrent -> T criterion met; close margin -> covered. A reading that only knows 'recurrence' (or only 'active') answers conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE, n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})

    # ------------------------------------------------------------ 1 verification status
    n = 97
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    conds[0]["verificationStatus"] = cc(VER, "provisional", "Provisional")
    conds[0]["text"] = narrative("Adenocarcinoma of rectum (provisional diagnosis, awaiting review)")
    case(n, "provisional-rectal-diagnosis-is-not-documented", "The order's reasonReference names the rectal cancer (C20/363351006), but its verificationStatus is provisional (FHIR R4 condition-ver-status); pT4a and an involved margin are focused on it. Rule 1: a provisional, differential or unconfirmed diagnosis names the cancer the order treats (staging and margins are read for it) but does not document it -> the rectal cancer criterion is unknown -> conditional (confirm the diagnosis). A naive reading that only drops refuted and entered-in-error Conditions answers covered." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE + "; HL7 FHIR R4 CodeSystem condition-ver-status (provisional)", n, [iort_cpt(pid, reasons=[ref("Condition", "rectal-ca")])], conds, procs, obs, {"ServiceRequest/iort-electrons": "conditional"})

    n = 98
    pid = P(n)
    conds, procs, obs = good_rectal_record(pid)
    dd = rectal(pid, cid="rectal-dd", onset="2025-02-11", text="Rectal mass, malignancy suspected")
    dd["verificationStatus"] = cc(VER, "differential", "Differential")
    conds.append(dd)
    case(n, "confirmed-rectal-diagnosis-preferred-to-newer-differential", "No reason on the order. Two current rectal Conditions: the confirmed adenocarcinoma (2024-09-18; pT4a and an involved margin focused on it) and a newer differential diagnosis of a rectal mass (2025-02-11, verificationStatus differential). Rule 1c: a confirmed diagnosis is preferred to one that is not established, before recency -> rectal met -> covered. A reading that takes the most recent rectal Condition chooses the differential one and answers conditional." + ADAPT,
         SRC_MCODE + "; " + SRC_USCORE + "; HL7 FHIR R4 CodeSystem condition-ver-status (differential)", n, [iort_cpt(pid)], conds, procs, obs, {"ServiceRequest/iort-electrons": "covered"})


if __name__ == "__main__":
    main()
