"""Building blocks for the acceptance cases 048 onwards (see build_cases.py).

Each builder keeps the shape, codes, extensions and profiles of a published example resource
(named in its docstring: repository + path); only ids, dates and the patient are adapted so
that the references of one case line up. Everything an EHR adds around a record (narratives,
meta, identifiers, absolute fullUrls, search modes, OperationOutcome entries) is added here so
that every case carries that noise.
"""

import copy
import hashlib
import json
import uuid

BASE = "https://ehr.example.org/fhir/R4"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10CM_OID = "urn:oid:2.16.840.1.113883.6.90"
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
CPT = "http://www.ama-assn.org/go/cpt"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
UCUM = "http://unitsofmeasure.org"
CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDCAT = "http://terminology.hl7.org/CodeSystem/condition-category"
OBSCAT = "http://terminology.hl7.org/CodeSystem/observation-category"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition/"
USCORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
CRD = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/"
AJCC8 = {
    "coding": [
        {
            "system": SCT,
            "code": "897275008",
            "display": "American Joint Commission on Cancer, Cancer Staging Manual, 8th edition neoplasm staging system (tumor staging)",
        }
    ]
}


def cc(system, code, display, text=None):
    out = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


def multi(codings, text=None):
    out = {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}
    if text:
        out["text"] = text
    return out


def ref(kind, rid, form="relative", version="2"):
    """A reference in one of the forms EHRs write."""
    if form == "relative":
        return {"reference": f"{kind}/{rid}"}
    if form == "absolute":
        return {"reference": f"{BASE}/{kind}/{rid}"}
    if form == "versioned":
        return {"reference": f"{BASE}/{kind}/{rid}/_history/{version}"}
    if form == "contained":
        return {"reference": f"#{rid}"}
    raise ValueError(form)


def narrative(text):
    return {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{text}</p></div>',
    }


def meta(profiles, updated, version="1"):
    return {"versionId": version, "lastUpdated": updated, "profile": list(profiles)}


def ident(system, value):
    return [{"use": "official", "system": system, "value": value}]


# ---------------------------------------------------------------- Patient and Coverage


def patient(pid, family, given, gender, birth, mrn):
    """mCODE CancerPatient + US Core Patient (shape of mCODE EX_Basic.fsh cancer-patient-john-anyperson)."""
    return {
        "resourceType": "Patient",
        "id": pid,
        "meta": meta([MCODE + "mcode-cancer-patient", USCORE + "us-core-patient"], "2025-06-02T09:14:33.020Z"),
        "text": narrative(f"{given} {family}, {gender}, born {birth}"),
        "identifier": [
            {
                "use": "usual",
                "type": cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number"),
                "system": "http://hospital.example.org",
                "value": mrn,
            }
        ],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": "555-555-5555", "use": "home"}],
        "gender": gender,
        "birthDate": birth,
        "address": [{"use": "home", "line": ["123 Main St"], "city": "Phoenix", "state": "AZ", "postalCode": "85004", "country": "US"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US", "display": "English (Region=United States)"}], "text": "English"}}],
    }


def coverage(pid, member):
    """US Core Coverage, shaped as the existing cases' coverage prefetch."""
    return {
        "resourceType": "Coverage",
        "id": f"cov-{pid}",
        "meta": meta([USCORE + "us-core-coverage"], "2025-01-03T15:00:00.000Z"),
        "identifier": [
            {
                "type": cc("http://terminology.hl7.org/CodeSystem/v2-0203", "MB", "Member Number"),
                "system": "https://www.azblue.com/fhir/sid/member-id",
                "value": member,
            }
        ],
        "status": "active",
        "type": cc("https://nahdo.org/sopt", "5", "PRIVATE HEALTH INSURANCE"),
        "subscriberId": member,
        "beneficiary": {"reference": f"Patient/{pid}"},
        "relationship": cc("http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self"),
        "period": {"start": "2025-01-01"},
        "payor": [{"reference": "Organization/org-bcbsaz", "display": "Blue Cross Blue Shield of Arizona"}],
        "class": [
            {"type": cc("http://terminology.hl7.org/CodeSystem/coverage-class", "group", "Group"), "value": "G-004417", "name": "Desert Valley Employers Group"},
            {"type": cc("http://terminology.hl7.org/CodeSystem/coverage-class", "plan", "Plan"), "value": "PPO-2025", "name": "BlueCare PPO"},
        ],
    }


# ---------------------------------------------------------------- Bundles


def outcome(diagnostics="The following parameters were not understood and have been ignored: code", code="not-supported"):
    """A search outcome as servers put it in a searchset (Bundle.entry.search.mode = outcome)."""
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, diagnostics)}",
        "resource": {
            "resourceType": "OperationOutcome",
            "id": "search-outcome",
            "issue": [{"severity": "warning", "code": code, "diagnostics": diagnostics}],
        },
        "search": {"mode": "outcome"},
    }


def searchset(query, resources, extra=(), total=None, bid=None):
    entries = []
    for r in resources:
        mode = r.pop("_mode", "match")
        entries.append({"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": mode}})
    entries.extend(extra)
    digest = hashlib.sha1(query.encode()).hexdigest()[:12]
    out = {
        "resourceType": "Bundle",
        "id": bid or f"ss-{digest}",
        "meta": {"lastUpdated": "2025-07-01T17:12:03.457Z"},
        "type": "searchset",
        "total": total if total is not None else sum(1 for e in entries if e["search"]["mode"] == "match"),
        "link": [{"relation": "self", "url": f"{BASE}/{query}"}],
    }
    if entries:
        out["entry"] = entries
    return out


OBS_QUERY = (
    "Observation?patient={pid}&code=http%3A%2F%2Floinc.org%7C21905-5,http%3A%2F%2Floinc.org%7C21899-0,"
    "http%3A%2F%2Fsnomed.info%2Fsct%7C399504009,http%3A%2F%2Fsnomed.info%2Fsct%7C384625004,"
    "http%3A%2F%2Fsnomed.info%2Fsct%7C78873005,http%3A%2F%2Fsnomed.info%2Fsct%7C395536008,"
    "http%3A%2F%2Floinc.org%7C33737-8"
)


def request(pid, orders, conditions, procedures, observations, member, name, obs_extra=(), cond_extra=(), obs_total=None, encounter=True):
    p = patient(pid, *name)
    ctx = {"userId": "Practitioner/pract-ramirez", "patientId": pid}
    if encounter:
        ctx["encounterId"] = f"enc-{pid}"
    ctx["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid5(uuid.NAMESPACE_URL, "iort-cds-case-" + pid)),
        "context": ctx,
        "prefetch": {
            "patient": p,
            "coverage": searchset(f"Coverage?patient={pid}&status=active", [coverage(pid, member)]),
            "conditions": searchset(f"Condition?patient={pid}", conditions, cond_extra),
            "procedures": searchset(f"Procedure?patient={pid}", procedures),
            "observations": searchset(OBS_QUERY.format(pid=pid), observations, obs_extra, total=obs_total),
        },
    }


# ---------------------------------------------------------------- Conditions


def _status(code):
    names = {"active": "Active", "recurrence": "Recurrence", "relapse": "Relapse", "inactive": "Inactive", "remission": "Remission", "resolved": "Resolved"}
    return cc(CLIN, code, names[code])


def rectal(pid, cid="rectal-ca", status="active", codings=None, onset="2024-09-18", stage=None, text="Adenocarcinoma of rectum", abatement=None):
    """mCODE PrimaryCancerCondition (shape of mCODE EX_ExtendedExample.fsh primary-cancer-condition-jenny-m:
    histologyMorphologyBehavior extension, problem-list-item, asserter, stage) with a rectal code."""
    if codings is None:
        codings = [(ICD10CM, "C20", "Malignant neoplasm of rectum"), (SCT, "363351006", "Malignant neoplasm of rectum (disorder)")]
    c = {
        "resourceType": "Condition",
        "id": cid,
        "meta": meta([MCODE + "mcode-primary-cancer-condition", USCORE + "us-core-condition-problems-health-concerns"], "2025-05-28T21:03:44.100Z"),
        "text": narrative(f"{text} ({status})"),
        "extension": [
            {
                "url": MCODE + "mcode-histology-morphology-behavior",
                "valueCodeableConcept": cc(SCT, "35917007", "Adenocarcinoma, no subtype (morphologic abnormality)"),
            }
        ],
        "identifier": ident("urn:oid:2.16.840.1.113883.3.7418.2.3", f"PL-{pid}-{cid}"),
        "clinicalStatus": _status(status),
        "verificationStatus": cc(VER, "confirmed", "Confirmed"),
        "category": [cc(CONDCAT, "problem-list-item", "Problem List Item")],
        "code": multi(codings, text),
        "bodySite": [cc(SCT, "34402009", "Rectum structure (body structure)")],
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset,
        "recordedDate": onset,
        "asserter": {"reference": "Practitioner/us-core-practitioner-owen-oncologist", "display": "Owen Oncologist, MD"},
    }
    if abatement:
        c["abatementDateTime"] = abatement
    if stage:
        c["stage"] = stage
    return c


def breast_jenny(pid, cid="breast-ca", status="remission", onset="2018-03-16", stage=None):
    """mCODE EX_ExtendedExample.fsh primary-cancer-condition-jenny-m: SNOMED 353431000119107, infiltrating
    duct carcinoma morphology, clinicalStatus remission as published (adapted where the case says so)."""
    c = {
        "resourceType": "Condition",
        "id": cid,
        "meta": meta([MCODE + "mcode-primary-cancer-condition"], "2024-02-11T10:00:00.000Z"),
        "text": narrative(f"Primary malignant neoplasm of female left breast ({status})"),
        "extension": [
            {
                "url": MCODE + "mcode-histology-morphology-behavior",
                "valueCodeableConcept": cc(SCT, "82711006", "Infiltrating duct carcinoma (morphologic abnormality)"),
            }
        ],
        "clinicalStatus": _status(status),
        "verificationStatus": cc(VER, "confirmed", "Confirmed"),
        "category": [cc(CONDCAT, "problem-list-item", "Problem List Item")],
        "code": cc(SCT, "353431000119107", "Primary malignant neoplasm of female left breast (disorder)"),
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset,
        "asserter": {"reference": "Practitioner/us-core-practitioner-owen-oncologist"},
    }
    if stage is not False:
        c["stage"] = stage or [
            {
                "summary": cc(SCT, "1222806003", "American Joint Committee on Cancer stage IIIC (qualifier value)"),
                "type": AJCC8,
            }
        ]
    return c


def hypertension(pid, cid="htn"):
    """mCODE EX_ExtendedExample.fsh us-core-condition-hypertension-jenny-m (SNOMED 77970009)."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "meta": meta([USCORE + "us-core-condition-problems-health-concerns"], "2023-01-09T08:00:00.000Z"),
        "text": narrative("Benign hypertensive heart disease without congestive heart failure"),
        "clinicalStatus": _status("active"),
        "verificationStatus": cc(VER, "confirmed", "Confirmed"),
        "category": [cc(CONDCAT, "problem-list-item", "Problem List Item")],
        "code": cc(SCT, "77970009", "Benign hypertensive heart disease without congestive heart failure (disorder)"),
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": "2012-01-01",
        "asserter": {"reference": "Practitioner/us-core-practitioner-owen-oncologist"},
    }


def anxiety(pid, cid="anxiety"):
    """mCODE EX_ExtendedExample.fsh us-core-condition-anxiety-jenny-m (SNOMED 48694002)."""
    return {
        "resourceType": "Condition",
        "id": cid,
        "meta": meta([USCORE + "us-core-condition-problems-health-concerns"], "2023-01-09T08:00:00.000Z"),
        "clinicalStatus": _status("active"),
        "verificationStatus": cc(VER, "confirmed", "Confirmed"),
        "category": [cc(CONDCAT, "problem-list-item", "Problem List Item")],
        "code": cc(SCT, "48694002", "Anxiety (finding)"),
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": "2005-01-01",
    }


def synthea_condition(pid, cid, code, display, onset, status="active", abatement=None):
    """A Condition as Synthea writes it (synthetichealth/synthea modules/colorectal_cancer.json codes;
    US Core encounter-diagnosis shape of Synthea's R4 exporter: category encounter-diagnosis, code.text
    = display, encounter reference, onset/recorded dates with offsets)."""
    c = {
        "resourceType": "Condition",
        "id": cid,
        "meta": meta([USCORE + "us-core-condition-encounter-diagnosis"], "2025-02-02T12:00:00.000Z"),
        "clinicalStatus": _status(status),
        "verificationStatus": cc(VER, "confirmed", "Confirmed"),
        "category": [cc(CONDCAT, "encounter-diagnosis", "Encounter Diagnosis")],
        "code": {"coding": [{"system": SCT, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": f"Encounter/enc-onc-{cid}"},
        "onsetDateTime": onset,
        "recordedDate": onset,
    }
    if abatement:
        c["abatementDateTime"] = abatement
    return c


def liver_mets(pid, cid="liver-mets", primary="rectal-ca", icd=True, snomed=True, profile=True):
    """mCODE SecondaryCancerCondition (shape of mCODE EX_Basic.fsh secondary-cancer-condition-brain-mets:
    relatedPrimaryCancerCondition extension) with a liver site: ICD-10-CM C78.7 / SNOMED 94381002."""
    codings = []
    if icd:
        codings.append((ICD10CM, "C78.7", "Secondary malignant neoplasm of liver and intrahepatic bile duct"))
    if snomed:
        codings.append((SCT, "94381002", "Secondary malignant neoplasm of liver (disorder)"))
    c = {
        "resourceType": "Condition",
        "id": cid,
        "meta": meta(([MCODE + "mcode-secondary-cancer-condition"] if profile else []) + [USCORE + "us-core-condition-problems-health-concerns"], "2025-04-02T16:20:00.000Z"),
        "text": narrative("Metastatic adenocarcinoma to liver"),
        "clinicalStatus": _status("active"),
        "verificationStatus": cc(VER, "confirmed", "Confirmed"),
        "category": [cc(CONDCAT, "problem-list-item", "Problem List Item")],
        "code": multi(codings, "Liver metastasis"),
        "bodySite": [cc(SCT, "10200004", "Liver structure (body structure)")],
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": "2025-03-30",
        "asserter": {"reference": "Practitioner/us-core-practitioner-kyle-anydoc"},
    }
    if profile:
        c["extension"] = [{"url": MCODE + "mcode-related-primary-cancer-condition", "valueReference": {"reference": f"Condition/{primary}"}}]
    return c


# ---------------------------------------------------------------- Observations


def _tnm_obs(pid, oid, code, value, effective, focus=None, profile="mcode-tnm-primary-tumor-category", category="imaging"):
    o = {
        "resourceType": "Observation",
        "id": oid,
        "meta": meta([MCODE + profile], effective + "T18:30:00.000Z" if len(effective) == 10 else "2025-03-14T18:30:00.000Z"),
        "text": narrative(value["coding"][0]["display"] if "coding" in value else "TNM"),
        "status": "final",
        "category": [cc(OBSCAT, category, category.capitalize())],
        "code": code,
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": effective,
        "performer": [{"reference": "Practitioner/us-core-practitioner-owen-oncologist"}],
        "valueCodeableConcept": value,
        "method": AJCC8,
    }
    if focus is not None:
        o["focus"] = [focus]
    return o


T_CODES = {
    "cT": cc(SCT, "399504009", "cT category (observable entity)"),
    "pT": cc(SCT, "384625004", "pT category (observable entity)"),
    "T": cc(SCT, "78873005", "T category (observable entity)"),
    "loinc-c": cc(LOINC, "21905-5", "Primary tumor.clinical [Class] Cancer"),
    "loinc-p": cc(LOINC, "21899-0", "Primary tumor.pathology Cancer"),
}
T_VALUES = {
    "cT3": cc(SCT, "1228938002", "American Joint Committee on Cancer cT3 (qualifier value)"),
    "cT4": cc(SCT, "1228944003", "American Joint Committee on Cancer cT4 (qualifier value)"),
    "cT4b": cc(SCT, "1228946001", "American Joint Committee on Cancer cT4b (qualifier value)"),
    "pT3": cc(SCT, "1229859000", "American Joint Committee on Cancer pT3 (qualifier value)"),
    "pT4": cc(SCT, "1229864001", "American Joint Committee on Cancer pT4 (qualifier value)"),
    "pT4a": cc(SCT, "1229865000", "American Joint Committee on Cancer pT4a (qualifier value)"),
    "pT4b": cc(SCT, "1229866004", "American Joint Committee on Cancer pT4b (qualifier value)"),
    "T4-old": cc(SCT, "65565005", "T4 category (finding)"),
}


def t_obs(pid, oid, kind, value, effective, focus=None):
    """mCODE TNMPrimaryTumorCategory (shape of mCODE EX_ExtendedExample.fsh tnm-pathologic-primary-tumor-category-jenny-m)."""
    return _tnm_obs(pid, oid, T_CODES[kind], T_VALUES[value], effective, focus)


def n_obs(pid, oid, effective):
    """mCODE TNMRegionalNodesCategory (tnm-pathologic-regional-nodes-category-jenny-m)."""
    return _tnm_obs(pid, oid, cc(SCT, "371494008", "pN category (observable entity)"), cc(SCT, "1229947003", "American Joint Committee on Cancer pN0 (qualifier value)"), effective, profile="mcode-tnm-regional-nodes-category")


def stage_group(pid, oid, members, effective, focus=None, kind="pathologic", value=("1222806003", "American Joint Committee on Cancer stage IIIC (qualifier value)")):
    """mCODE TNMStageGroup (shape of mCODE EX_ExtendedExample.fsh tnm-pathologic-stage-group-jenny-m:
    SNOMED 399588009 / 399537006, focus (STU3 requirement), hasMember T/N/M)."""
    code = cc(SCT, "399588009", "Pathologic TNM stage grouping (observable entity)") if kind == "pathologic" else cc(SCT, "399537006", "Clinical TNM stage grouping (observable entity)")
    o = _tnm_obs(pid, oid, code, cc(SCT, value[0], value[1]), effective, focus, profile="mcode-tnm-stage-group")
    o["hasMember"] = [m for m in members]
    return o


def margin_finding(pid, oid, involved, effective, focus=None, part_of=None, derived_from=None, status="final", issued=None, note=None):
    """A surgical margin finding (SNOMED 395536008) as a US Core clinical result; value involved
    370109009 / uninvolved 55182004."""
    value = cc(SCT, "370109009", "Surgical margin involved by tumor (finding)") if involved else cc(SCT, "55182004", "Surgical margin uninvolved by tumor (finding)")
    o = {
        "resourceType": "Observation",
        "id": oid,
        "meta": meta([USCORE + "us-core-observation-clinical-result"], (issued or effective)[:10] + "T23:10:00.000Z"),
        "text": narrative("Circumferential resection margin: " + ("involved" if involved else "uninvolved") + f" ({status})"),
        "identifier": ident("urn:oid:2.16.840.1.113883.3.7418.5.2", f"SP-{oid}"),
        "status": status,
        "category": [cc(OBSCAT, "laboratory", "Laboratory")],
        "code": cc(SCT, "395536008", "Surgical margin finding (observable entity)"),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": effective,
        "issued": issued or effective,
        "performer": [{"reference": "Organization/org-pathology", "display": "Desert Pathology Associates"}],
        "valueCodeableConcept": value,
    }
    if focus is not None:
        o["focus"] = [focus]
    if part_of is not None:
        o["partOf"] = [part_of]
    if derived_from is not None:
        o["derivedFrom"] = [derived_from]
    if note:
        o["note"] = [{"text": note}]
    return o


def margin_distance(pid, oid, value, unit, effective, comparator=None, focus=None, part_of=None):
    """Distance of tumor from closest margin, LOINC 33737-8, UCUM length."""
    q = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if comparator:
        q = {"value": value, "comparator": comparator, "unit": unit, "system": UCUM, "code": unit}
    o = {
        "resourceType": "Observation",
        "id": oid,
        "meta": meta([USCORE + "us-core-observation-clinical-result"], effective[:10] + "T23:10:00.000Z"),
        "text": narrative(f"Distance of tumor from closest margin: {comparator or ''}{value} {unit}"),
        "status": "final",
        "category": [cc(OBSCAT, "laboratory", "Laboratory")],
        "code": cc(LOINC, "33737-8", "Distance of tumor from closest margin [Length] by CAP cancer protocols", "Distance to closest (circumferential) margin"),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": effective,
        "issued": effective,
        "valueQuantity": q,
    }
    if focus is not None:
        o["focus"] = [focus]
    if part_of is not None:
        o["partOf"] = [part_of]
    return o


VITALS = [
    # (profile, LOINC, display, text, unit code, unit, base value)
    ("us-core-heart-rate", "8867-4", "Heart Rate", "heart_rate", "/min", "beats/min", 72.0),
    ("us-core-respiratory-rate", "9279-1", "Respiratory rate", "Respiratory Rate", "/min", "breaths/minute", 16),
    ("us-core-body-temperature", "8310-5", "Body temperature", "Body Temperature", "Cel", "C", 36.8),
    ("us-core-body-weight", "29463-7", "Body weight", "Body Weight", "kg", "kg", 79.4),
    ("us-core-pulse-oximetry", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "oxygen_saturation", "%", "%", 97),
]


def vital(pid, oid, i, day):
    """US Core vital signs (shape of HL7/US-Core input/examples/Observation-heart-rate.json and
    Observation-blood-pressure.json): category vital-signs with text, LOINC code with text, UCUM."""
    if i % 6 == 5:
        sys_v, dia_v = 118 + (i % 17), 72 + (i % 11)
        return {
            "resourceType": "Observation",
            "id": oid,
            "meta": {"versionId": "1", "lastUpdated": f"{day}T15:00:00.000Z", "profile": [USCORE + "us-core-blood-pressure"]},
            "status": "final",
            "category": [{"text": "Vital Signs", "coding": [{"code": "vital-signs", "system": OBSCAT, "display": "Vital Signs"}]}],
            "code": {"text": "Blood pressure systolic and diastolic", "coding": [{"code": "85354-9", "system": LOINC, "display": "Blood pressure panel with all children optional"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"display": "Infusion visit"},
            "effectiveDateTime": f"{day}T14:{i % 60:02d}:00-07:00",
            "component": [
                {"code": {"text": "Systolic blood pressure", "coding": [{"code": "8480-6", "system": LOINC, "display": "Systolic blood pressure"}]}, "valueQuantity": {"code": "mm[Hg]", "unit": "mmHg", "value": sys_v, "system": UCUM}},
                {"code": {"text": "Diastolic blood pressure", "coding": [{"code": "8462-4", "system": LOINC, "display": "Diastolic blood pressure"}]}, "valueQuantity": {"code": "mm[Hg]", "unit": "mmHg", "value": dia_v, "system": UCUM}},
            ],
        }
    prof, code, disp, text, ucode, unit, base = VITALS[i % 6 if i % 6 < 5 else 0]
    value = round(base + ((i * 7) % 9 - 4) * (0.1 if isinstance(base, float) else 1), 1) if isinstance(base, float) else base + (i * 3) % 5 - 2
    o = {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"versionId": "1", "lastUpdated": f"{day}T15:00:00.000Z", "profile": [USCORE + prof]},
        "status": "final",
        "category": [{"text": "Vital Signs", "coding": [{"code": "vital-signs", "system": OBSCAT, "display": "Vital Signs"}]}],
        "code": {"text": text, "coding": [{"code": code, "system": LOINC, "display": disp}]},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"display": "Infusion visit"},
        "effectiveDateTime": f"{day}T14:{i % 60:02d}:00-07:00",
        "valueQuantity": {"code": ucode, "unit": unit, "value": value, "system": UCUM},
    }
    if code == "59408-5":
        o["code"]["coding"].append({"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"})
    return o


def lab_cea(pid, oid, value, day):
    """A CEA lab result (US Core laboratory result) as unrelated noise."""
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": meta([USCORE + "us-core-observation-lab"], f"{day}T19:00:00.000Z"),
        "status": "final",
        "category": [cc(OBSCAT, "laboratory", "Laboratory")],
        "code": cc(LOINC, "2039-6", "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma"),
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"{day}T08:00:00-07:00",
        "valueQuantity": {"value": value, "unit": "ng/mL", "system": UCUM, "code": "ng/mL"},
        "referenceRange": [{"high": {"value": 3.0, "unit": "ng/mL", "system": UCUM, "code": "ng/mL"}}],
    }


# ---------------------------------------------------------------- Procedures


def resection(pid, pid_id="lar", code=("4558008", "Anterior resection of rectum (procedure)"), system=SCT, date="2025-03-12T07:45:00-07:00", reason=None, outcome=None, body_site=True, status="completed"):
    """mCODE CancerRelatedSurgicalProcedure (shape of mCODE EX_ExtendedExample.fsh
    cancer-related-surgical-procedure-jenny-m: treatmentIntent extension, asserter, reasonReference, bodySite)."""
    p = {
        "resourceType": "Procedure",
        "id": pid_id,
        "meta": meta([MCODE + "mcode-cancer-related-surgical-procedure", USCORE + "us-core-procedure"], date[:10] + "T23:59:00.000Z"),
        "text": narrative(code[1]),
        "extension": [{"url": MCODE + "mcode-procedure-intent", "valueCodeableConcept": cc(SCT, "373808002", "Curative - procedure intent (qualifier value)")}],
        "status": status,
        "code": cc(system, code[0], code[1]),
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": date,
        "asserter": {"reference": "Practitioner/us-core-practitioner-owen-oncologist"},
    }
    if reason is not None:
        p["reasonReference"] = [reason]
    if body_site:
        p["bodySite"] = [cc(SCT, "34402009", "Rectum structure (body structure)")]
    if outcome is not None:
        p["outcome"] = cc(SCT, "370109009", "Surgical margin involved by tumor (finding)") if outcome else cc(SCT, "55182004", "Surgical margin uninvolved by tumor (finding)")
    return p


def colonoscopy(pid, pid_id="colonoscopy"):
    """Synthea colorectal_cancer.json Diagnostic_Colonoscopy_Procedure (SNOMED 73761001) as noise."""
    return {
        "resourceType": "Procedure",
        "id": pid_id,
        "meta": meta([USCORE + "us-core-procedure"], "2024-08-30T18:00:00.000Z"),
        "status": "completed",
        "code": {"coding": [{"system": SCT, "code": "73761001", "display": "Colonoscopy"}], "text": "Colonoscopy"},
        "subject": {"reference": f"Patient/{pid}"},
        "encounter": {"reference": "Encounter/enc-colonoscopy"},
        "performedPeriod": {"start": "2024-08-30T09:10:00-07:00", "end": "2024-08-30T09:45:00-07:00"},
    }


# ---------------------------------------------------------------- Orders


def iort_cpt(pid, oid="iort-electrons", reasons=None, contained=None, reason_code=None, code=("77425", "Intraoperative radiation treatment delivery, electrons, single treatment session")):
    """A Da Vinci CRD ServiceRequest (profile-servicerequest) for IORT."""
    s = {
        "resourceType": "ServiceRequest",
        "id": oid,
        "meta": {"profile": [CRD + "profile-servicerequest"]},
    }
    if contained:
        s["contained"] = contained
    s.update(
        {
            "identifier": [{"type": cc("http://terminology.hl7.org/CodeSystem/v2-0203", "PLAC", "Placer Identifier"), "system": "urn:oid:2.16.840.1.113883.3.7418.6.1", "value": f"ORD-{pid}-{oid}"}],
            "status": "draft",
            "intent": "order",
            "category": [cc(SCT, "108290001", "Radiation oncology AND/OR radiotherapy (procedure)")],
            "code": {"coding": [{"system": CPT, "code": code[0], "display": code[1]}], "text": "IORT, electrons (Mobetron), single session"},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/enc-{pid}"},
            "occurrenceDateTime": "2025-07-21T07:30:00-07:00",
            "authoredOn": "2025-07-01T10:12:00-07:00",
            "requester": {"reference": "Practitioner/pract-ramirez", "display": "Elena Ramirez, MD"},
            "performer": [{"reference": "Organization/org-valley-radonc", "display": "Valley Radiation Oncology"}],
        }
    )
    if reason_code:
        s["reasonCode"] = reason_code
    if reasons:
        s["reasonReference"] = reasons
    s["bodySite"] = [cc(SCT, "34402009", "Rectum structure (body structure)")]
    s["insurance"] = [{"reference": f"Coverage/cov-{pid}"}]
    return s


def dump(path, description, source, req, orders, not_iort=(), compact=False):
    doc = {
        "description": description,
        "source": source,
        "request": req,
        "expect": {"orders": orders, "notIort": list(not_iort)},
    }
    with open(path, "w") as f:
        if compact:
            # one line per Bundle entry keeps a 1,000-resource page under ~1.5 MB and diffable
            f.write(compact_json(doc))
        else:
            json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")


def compact_json(doc):
    """JSON with each Bundle entry on its own line, everything else compact."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return text.replace(',{"fullUrl":', ',\n{"fullUrl":').replace('[{"fullUrl":', '[\n{"fullUrl":')


def deep(x):
    return copy.deepcopy(x)
