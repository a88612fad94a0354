//! Synthetic, realistic patient records and `order-sign` requests for the benchmarks and the
//! load test (`scripts/loadtest.sh` writes its request bodies with this same code, through
//! `IORT_BENCH_WRITE_BODIES`, so both measure the same bytes).
//!
//! Why generated and not fixtures: the sizes that matter (about 40 resources for a typical
//! rectal-cancer patient, about 1,000 for a long history) would be megabytes of JSON to review;
//! templates are reviewable and the generator is deterministic (no randomness, fixed dates), so
//! every run measures exactly the same bytes. The resources follow the shapes the EHRs send and
//! the service reads (mCODE primary cancer Condition, TNM Observations with `focus`, margin
//! Observations `partOf` the resection, US Core Coverage), with the codes of
//! `shared/reference/codes.md` for everything the decision reads; the filler (comorbidities,
//! other procedures, older staging and margin findings) uses common ICD-10-CM and CPT codes.
//!
//! Every IORT record is built so that the policy is met (rectal cancer, pT4a, an involved margin
//! that is the most recent assessment): the benchmark checks the answer is `covered`, so it
//! times the full path (facts, decision, a card and a system action), never an early exit.

use chrono::{Days, NaiveDate};
use serde_json::{Value, json};

/// The patient every generated record is about.
pub const PATIENT_ID: &str = "bench-pat-1";
/// The `order-sign` service the requests are sent to.
pub const SERVICE_ID: &str = "iort-coverage";
/// The rectal cancer Condition every IORT order gives as its reason.
const CANCER_ID: &str = "rectal-ca";
/// The low anterior resection whose pathology gives the margins.
const RESECTION_ID: &str = "lar";
/// Where the generated search Bundles say they came from (never contacted).
const EHR_BASE: &str = "https://ehr.example.org/fhir";

/// One kind of request the benchmarks and the load test measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A CT and a medication order, no IORT order: the service answers `{"cards": []}` without
    /// reading the record (the prefetch is still sent, as an EHR sends it on every order-sign).
    FastPath,
    /// An IORT order and a typical record: 40 resources across the prefetch keys.
    Typical,
    /// An IORT order and a long history: 1,000 resources.
    Heavy,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::FastPath, Kind::Typical, Kind::Heavy];

    /// The name used in benchmark ids, body file names and BENCHMARKS.md.
    pub fn name(self) -> &'static str {
        match self {
            Kind::FastPath => "fast-path",
            Kind::Typical => "typical",
            Kind::Heavy => "heavy",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How many resources of each kind the record holds (the Patient makes one more).
    pub fn size(self) -> Size {
        match self {
            Kind::FastPath | Kind::Typical => Size {
                coverages: 2,
                conditions: 8,
                procedures: 12,
                observations: 17,
            },
            Kind::Heavy => Size {
                coverages: 4,
                conditions: 200,
                procedures: 400,
                observations: 395,
            },
        }
    }

    /// Whether the draft orders hold an IORT order (and the answer is a covered card).
    pub fn has_iort_order(self) -> bool {
        self != Kind::FastPath
    }
}

/// Resource counts per prefetch key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub coverages: usize,
    pub conditions: usize,
    pub procedures: usize,
    pub observations: usize,
}

impl Size {
    /// All resources, the Patient included.
    pub fn total(self) -> usize {
        1 + self.coverages + self.conditions + self.procedures + self.observations
    }
}

/// A patient record split by prefetch key.
#[derive(Debug, Clone)]
pub struct Record {
    pub patient: Value,
    pub coverages: Vec<Value>,
    pub conditions: Vec<Value>,
    pub procedures: Vec<Value>,
    pub observations: Vec<Value>,
}

impl Record {
    /// The record of `size`: the resources the decision hinges on first, then filler.
    pub fn generate(size: Size) -> Record {
        let mut coverages = vec![coverage(
            "cov-bcbsaz",
            1,
            "Blue Cross Blue Shield of Arizona",
            "BlueCare PPO",
        )];
        let others = [
            ("Delta Dental of Arizona", "Dental PPO"),
            ("VSP Vision Care", "Vision"),
            ("Aflac", "Cancer indemnity"),
        ];
        for i in 1..size.coverages {
            let (payor, plan) = others[(i - 1) % others.len()];
            coverages.push(coverage(&format!("cov-{i}"), i + 1, payor, plan));
        }

        let mut conditions = vec![rectal_cancer()];
        conditions.extend((1..size.conditions).map(filler_condition));

        let mut procedures = vec![resection()];
        procedures.extend((1..size.procedures).map(filler_procedure));

        let mut observations = key_observations();
        let first_filler = observations.len();
        observations.extend((first_filler..size.observations).map(filler_observation));
        observations.truncate(size.observations);

        Record {
            patient: patient(),
            coverages,
            conditions,
            procedures,
            observations,
        }
    }

    /// Every resource, the Patient first.
    pub fn resources(&self) -> impl Iterator<Item = &Value> {
        std::iter::once(&self.patient)
            .chain(&self.coverages)
            .chain(&self.conditions)
            .chain(&self.procedures)
            .chain(&self.observations)
    }

    /// The prefetch object an EHR would send for the service's templates.
    pub fn prefetch(&self) -> Value {
        json!({
            "patient": self.patient,
            "coverage": searchset("Coverage", &format!("patient={PATIENT_ID}&status=active"), &self.coverages),
            "conditions": searchset("Condition", &format!("patient={PATIENT_ID}"), &self.conditions),
            "procedures": searchset("Procedure", &format!("patient={PATIENT_ID}"), &self.procedures),
            "observations": searchset("Observation", &format!("patient={PATIENT_ID}"), &self.observations),
        })
    }

    /// A FHIR transaction Bundle that PUTs every resource at `Type/id`, to load the record into
    /// a FHIR server (the load test's FHIR-fetch path).
    pub fn transaction(&self) -> Value {
        let entry: Vec<Value> = self
            .resources()
            .map(|r| {
                let url = format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default()
                );
                json!({"resource": r, "request": {"method": "PUT", "url": url}})
            })
            .collect();
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entry})
    }
}

/// The `order-sign` request of `kind` with the record as prefetch.
pub fn request(kind: Kind) -> Value {
    let record = Record::generate(kind.size());
    let mut r = request_without_prefetch(kind, None);
    r["prefetch"] = record.prefetch();
    r
}

/// The `order-sign` request of `kind` with no prefetch at all, so the service fetches the whole
/// record from `fhir_server` (no `fhirAuthorization`: the load test's server is open).
pub fn request_without_prefetch(kind: Kind, fhir_server: Option<&str>) -> Value {
    let orders: Vec<Value> = if kind.has_iort_order() {
        vec![iort_order()]
    } else {
        vec![ct_order(), medication_order()]
    };
    let entry: Vec<Value> = orders.into_iter().map(|r| json!({"resource": r})).collect();
    let mut r = json!({
        "hook": "order-sign",
        "hookInstance": "5f0e7f43-8a9a-4c47-9f36-3f5b1d0c2a11",
        "context": {
            "userId": "Practitioner/pract-ramirez",
            "patientId": PATIENT_ID,
            "encounterId": "enc-bench-1",
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": entry}
        }
    });
    if let Some(server) = fhir_server {
        r["fhirServer"] = json!(server);
    }
    r
}

/// The request body as an EHR sends it (compact JSON).
pub fn body(request: &Value) -> Vec<u8> {
    serde_json::to_vec(request).expect("a serde_json::Value always serialises")
}

// -------------------------------------------------------------------------------------------------
// Templates

fn subject() -> Value {
    json!({"reference": format!("Patient/{PATIENT_ID}")})
}

/// `days` after `from` (ISO date), for spreading filler over a history.
fn date_after(from: NaiveDate, days: u64) -> String {
    from.checked_add_days(Days::new(days))
        .unwrap_or(from)
        .format("%Y-%m-%d")
        .to_string()
}

fn history_start() -> NaiveDate {
    NaiveDate::from_ymd_opt(2012, 1, 9).expect("a valid date")
}

/// Filler is dated in the 12 years before the cancer work-up (2012-01 .. 2024-01), so the
/// resection's pathology stays the most recent margin assessment.
fn filler_date(i: usize) -> String {
    date_after(history_start(), (i as u64 * 37) % 4380)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn meta(profile: &str, last_updated: &str) -> Value {
    json!({"versionId": "1", "lastUpdated": last_updated, "profile": [profile]})
}

fn searchset(resource_type: &str, query: &str, resources: &[Value]) -> Value {
    let entry: Vec<Value> = resources
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("{EHR_BASE}/{resource_type}/{}", r["id"].as_str().unwrap_or_default()),
                "resource": r,
                "search": {"mode": "match"}
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "id": format!("ss-{}", resource_type.to_ascii_lowercase()),
        "meta": {"lastUpdated": "2025-07-01T17:12:03.457Z"},
        "type": "searchset",
        "total": resources.len(),
        "link": [{"relation": "self", "url": format!("{EHR_BASE}/{resource_type}?{query}")}],
        "entry": entry
    })
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "meta": meta("http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-patient", "2025-06-02T09:14:33.020Z"),
        "identifier": [{
            "use": "usual",
            "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical Record Number")]},
            "system": "urn:oid:2.16.840.1.113883.3.7418.2.1",
            "value": "MRN-4410327"
        }],
        "active": true,
        "name": [{"use": "official", "family": "Okafor", "given": ["Grace", "A"]}],
        "telecom": [{"system": "phone", "value": "602-555-0147", "use": "home"}],
        "gender": "female",
        "birthDate": "1958-11-02",
        "address": [{"use": "home", "line": ["1200 W Camelback Rd"], "city": "Phoenix", "state": "AZ", "postalCode": "85013", "country": "US"}]
    })
}

fn coverage(id: &str, order: usize, payor: &str, plan: &str) -> Value {
    json!({
        "resourceType": "Coverage",
        "id": id,
        "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-coverage", "2025-01-03T15:00:00.000Z"),
        "identifier": [{
            "type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MB", "Member Number")]},
            "system": "https://payer.example.org/fhir/sid/member-id",
            "value": format!("XBZ{:09}", 98_426_769 + order)
        }],
        "status": "active",
        "type": {"coding": [coding("https://nahdo.org/sopt", "5", "PRIVATE HEALTH INSURANCE")]},
        "subscriberId": format!("XBZ{:09}", 98_426_769 + order),
        "beneficiary": subject(),
        "relationship": {"coding": [coding("http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self", "Self")]},
        "period": {"start": "2025-01-01"},
        "payor": [{"display": payor}],
        "order": order,
        "class": [
            {"type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/coverage-class", "group", "Group")]}, "value": "G-004417", "name": "Desert Valley Employers Group"},
            {"type": {"coding": [coding("http://terminology.hl7.org/CodeSystem/coverage-class", "plan", "Plan")]}, "value": format!("PLAN-{order}"), "name": plan}
        ]
    })
}

fn condition_status(system_suffix: &str, code: &str) -> Value {
    json!({"coding": [{"system": format!("http://terminology.hl7.org/CodeSystem/{system_suffix}"), "code": code}]})
}

fn rectal_cancer() -> Value {
    json!({
        "resourceType": "Condition",
        "id": CANCER_ID,
        "meta": meta("http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition", "2025-05-28T21:03:44.100Z"),
        "clinicalStatus": condition_status("condition-clinical", "active"),
        "verificationStatus": condition_status("condition-ver-status", "confirmed"),
        "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item", "Problem List Item")]}],
        "code": {
            "coding": [
                coding("http://hl7.org/fhir/sid/icd-10-cm", "C20", "Malignant neoplasm of rectum"),
                coding("http://snomed.info/sct", "363351006", "Malignant neoplasm of rectum (disorder)")
            ],
            "text": "Adenocarcinoma of rectum"
        },
        "bodySite": [{"coding": [coding("http://snomed.info/sct", "34402009", "Rectum structure (body structure)")]}],
        "subject": subject(),
        "onsetDateTime": "2024-09-18",
        "recordedDate": "2024-09-18"
    })
}

/// Comorbidities and past problems: (ICD-10-CM, display, clinical status).
const COMORBIDITIES: [(&str, &str, &str); 11] = [
    ("I10", "Essential (primary) hypertension", "active"),
    (
        "E11.9",
        "Type 2 diabetes mellitus without complications",
        "active",
    ),
    ("E78.5", "Hyperlipidemia, unspecified", "active"),
    (
        "K21.9",
        "Gastro-esophageal reflux disease without esophagitis",
        "active",
    ),
    ("E66.9", "Obesity, unspecified", "active"),
    (
        "G47.33",
        "Obstructive sleep apnea (adult) (pediatric)",
        "active",
    ),
    (
        "D50.0",
        "Iron deficiency anemia secondary to blood loss (chronic)",
        "resolved",
    ),
    ("J18.9", "Pneumonia, unspecified organism", "resolved"),
    (
        "N39.0",
        "Urinary tract infection, site not specified",
        "resolved",
    ),
    (
        "K57.30",
        "Diverticulosis of large intestine without perforation or abscess without bleeding",
        "active",
    ),
    ("M54.50", "Low back pain, unspecified", "inactive"),
];

fn filler_condition(i: usize) -> Value {
    let (code, display, status) = COMORBIDITIES[(i - 1) % COMORBIDITIES.len()];
    let date = filler_date(i);
    // A long history repeats problems as encounter diagnoses; the first pass is the problem list.
    let category = if i <= COMORBIDITIES.len() {
        ("problem-list-item", "Problem List Item")
    } else {
        ("encounter-diagnosis", "Encounter Diagnosis")
    };
    json!({
        "resourceType": "Condition",
        "id": format!("cond-{i:04}"),
        "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition-problems-health-concerns", &format!("{date}T10:00:00.000Z")),
        "clinicalStatus": condition_status("condition-clinical", status),
        "verificationStatus": condition_status("condition-ver-status", "confirmed"),
        "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/condition-category", category.0, category.1)]}],
        "code": {"coding": [coding("http://hl7.org/fhir/sid/icd-10-cm", code, display)], "text": display},
        "subject": subject(),
        "onsetDateTime": date,
        "recordedDate": date
    })
}

fn resection() -> Value {
    json!({
        "resourceType": "Procedure",
        "id": RESECTION_ID,
        "meta": meta("http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-related-surgical-procedure", "2025-03-12T23:59:00.000Z"),
        "status": "completed",
        "code": {"coding": [coding("http://snomed.info/sct", "4558008", "Anterior resection of rectum (procedure)")]},
        "subject": subject(),
        "performedDateTime": "2025-03-12T07:45:00-07:00",
        "reasonReference": [{"reference": format!("Condition/{CANCER_ID}")}],
        "bodySite": [{"coding": [coding("http://snomed.info/sct", "34402009", "Rectum structure (body structure)")]}]
    })
}

/// Other procedures of the history: (CPT, display, done for the cancer).
const PROCEDURES: [(&str, &str, bool); 12] = [
    (
        "45380",
        "Colonoscopy, flexible; with biopsy, single or multiple",
        true,
    ),
    ("74177", "CT abdomen and pelvis with contrast", true),
    ("71260", "CT thorax with contrast", true),
    (
        "72197",
        "MRI pelvis without contrast, followed by contrast",
        true,
    ),
    (
        "36561",
        "Insertion of tunneled centrally inserted central venous access device, with subcutaneous port",
        true,
    ),
    (
        "96413",
        "Chemotherapy administration, intravenous infusion technique; up to 1 hour",
        true,
    ),
    ("44310", "Ileostomy or jejunostomy, non-tube", true),
    ("93306", "Echocardiography, transthoracic, complete", false),
    ("45330", "Sigmoidoscopy, flexible; diagnostic", false),
    (
        "43239",
        "Esophagogastroduodenoscopy, flexible, transoral; with biopsy",
        false,
    ),
    (
        "88305",
        "Level IV surgical pathology, gross and microscopic examination",
        true,
    ),
    (
        "66984",
        "Extracapsular cataract removal with insertion of intraocular lens prosthesis",
        false,
    ),
];

fn filler_procedure(i: usize) -> Value {
    let (code, display, for_cancer) = PROCEDURES[(i - 1) % PROCEDURES.len()];
    let date = filler_date(i);
    let mut p = json!({
        "resourceType": "Procedure",
        "id": format!("proc-{i:04}"),
        "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-procedure", &format!("{date}T18:00:00.000Z")),
        "status": "completed",
        "code": {"coding": [coding("http://www.ama-assn.org/go/cpt", code, display)], "text": display},
        "subject": subject(),
        "performedDateTime": format!("{date}T08:30:00-07:00")
    });
    if for_cancer {
        p["reasonReference"] = json!([{"reference": format!("Condition/{CANCER_ID}")}]);
    }
    p
}

/// A TNM primary tumour category Observation about the rectal cancer.
fn t_category(
    id: &str,
    status: &str,
    observable: (&str, &str),
    value: (&str, &str, &str),
    date: &str,
) -> Value {
    json!({
        "resourceType": "Observation",
        "id": id,
        "meta": meta("http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-tnm-primary-tumor-category", &format!("{date}T18:30:00.000Z")),
        "status": status,
        "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "survey", "Survey")]}],
        "code": {"coding": [coding("http://snomed.info/sct", observable.0, observable.1)]},
        "subject": subject(),
        "focus": [{"reference": format!("Condition/{CANCER_ID}")}],
        "effectiveDateTime": date,
        "valueCodeableConcept": {"coding": [coding("http://snomed.info/sct", value.0, value.1)], "text": value.2},
        "method": {"coding": [coding("http://snomed.info/sct", "897275008", "American Joint Commission on Cancer, Cancer Staging Manual, 8th edition neoplasm staging system (tumor staging)")]}
    })
}

/// A pathology margin Observation: a coded finding or a distance in mm.
fn margin(id: &str, part_of: &str, date_time: &str, value: Value) -> Value {
    let code = if value.get("valueQuantity").is_some() {
        coding(
            "http://loinc.org",
            "33737-8",
            "Distance of tumor from closest margin",
        )
    } else {
        coding(
            "http://snomed.info/sct",
            "395536008",
            "Surgical margin finding (observable entity)",
        )
    };
    let mut o = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": meta("http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-clinical-result", "2025-03-15T01:10:00.000Z"),
        "status": "final",
        "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "laboratory", "Laboratory")]}],
        "code": {"coding": [code]},
        "subject": subject(),
        "partOf": [{"reference": part_of}],
        "effectiveDateTime": date_time,
        "issued": date_time
    });
    if let (Some(o), Some(v)) = (o.as_object_mut(), value.as_object()) {
        o.extend(v.clone());
    }
    o
}

const CT_CATEGORY: (&str, &str) = ("399504009", "cT category (observable entity)");
const PT_CATEGORY: (&str, &str) = ("384625004", "pT category (observable entity)");
const CT3: (&str, &str, &str) = (
    "1228938002",
    "American Joint Committee on Cancer cT3 (qualifier value)",
    "cT3",
);

/// What makes the record meet the policy: staging at diagnosis, and the resection's pathology
/// (pT4a, circumferential margin involved, 0.4 mm).
fn key_observations() -> Vec<Value> {
    let resection = format!("Procedure/{RESECTION_ID}");
    vec![
        t_category("tnm-ct", "final", CT_CATEGORY, CT3, "2024-09-25"),
        t_category(
            "tnm-pt",
            "final",
            PT_CATEGORY,
            (
                "1229865000",
                "American Joint Committee on Cancer pT4a (qualifier value)",
                "pT4a",
            ),
            "2025-03-14",
        ),
        margin(
            "margin-status",
            &resection,
            "2025-03-14T16:05:00-07:00",
            json!({"valueCodeableConcept": {"coding": [coding("http://snomed.info/sct", "370109009", "Surgical margin involved by tumor (finding)")]}}),
        ),
        margin(
            "margin-distance",
            &resection,
            "2025-03-14T16:05:00-07:00",
            json!({"valueQuantity": {"value": 0.4, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}}),
        ),
    ]
}

/// Older staging reads and margin findings (earlier excisions and polypectomies): repeated
/// clinical T3 reads, an amended one, one entered in error, clear margins with distances.
fn filler_observation(i: usize) -> Value {
    let date = filler_date(i);
    let id = format!("obs-{i:04}");
    // One of the first eleven filler procedures, which every record size has.
    let procedure = format!("Procedure/proc-{:04}", 1 + (i % 11));
    match i % 5 {
        0 => t_category(&id, "final", CT_CATEGORY, CT3, &date),
        1 => t_category(&id, "amended", CT_CATEGORY, CT3, &date),
        2 => margin(
            &id,
            &procedure,
            &format!("{date}T14:00:00-07:00"),
            json!({"valueCodeableConcept": {"coding": [coding("http://snomed.info/sct", "55182004", "Surgical margin uninvolved by tumor (finding)")]}}),
        ),
        3 => margin(
            &id,
            &procedure,
            &format!("{date}T14:00:00-07:00"),
            json!({"valueQuantity": {"value": 4.0 + (i % 20) as f64, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}}),
        ),
        _ => t_category(
            &id,
            "entered-in-error",
            PT_CATEGORY,
            (
                "1229866004",
                "American Joint Committee on Cancer pT4b (qualifier value)",
                "pT4b",
            ),
            &date,
        ),
    }
}

/// The IORT order: intraoperative electrons (CPT 77425) for the rectal cancer.
fn iort_order() -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": "iort-electrons",
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-servicerequest"]},
        "status": "draft",
        "intent": "order",
        "category": [{"coding": [coding("http://snomed.info/sct", "108290001", "Radiation oncology AND/OR radiotherapy (procedure)")]}],
        "code": {
            "coding": [coding("http://www.ama-assn.org/go/cpt", "77425", "Intraoperative radiation treatment delivery, electrons, single treatment session")],
            "text": "IORT, electrons, single session"
        },
        "subject": subject(),
        "encounter": {"reference": "Encounter/enc-bench-1"},
        "occurrenceDateTime": "2025-07-21T07:30:00-07:00",
        "authoredOn": "2025-07-01T10:12:00-07:00",
        "requester": {"reference": "Practitioner/pract-ramirez", "display": "Elena Ramirez, MD"},
        "reasonReference": [{"reference": format!("Condition/{CANCER_ID}")}],
        "bodySite": [{"coding": [coding("http://snomed.info/sct", "34402009", "Rectum structure (body structure)")]}],
        "insurance": [{"reference": "Coverage/cov-bcbsaz"}]
    })
}

/// A restaging CT (not IORT).
fn ct_order() -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": "ct-restaging",
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-servicerequest"]},
        "status": "draft",
        "intent": "order",
        "code": {"coding": [coding("http://www.ama-assn.org/go/cpt", "74177", "CT abdomen and pelvis with contrast")]},
        "subject": subject(),
        "encounter": {"reference": "Encounter/enc-bench-1"},
        "occurrenceDateTime": "2025-07-28T09:00:00-07:00",
        "authoredOn": "2025-07-01T10:12:00-07:00",
        "requester": {"reference": "Practitioner/pract-ramirez", "display": "Elena Ramirez, MD"},
        "reasonReference": [{"reference": format!("Condition/{CANCER_ID}")}],
        "insurance": [{"reference": "Coverage/cov-bcbsaz"}]
    })
}

/// An antiemetic prescription (not IORT; the service does not read medication orders).
fn medication_order() -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": "antiemetic",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "Ondansetron 8 mg oral tablet"},
        "subject": subject(),
        "encounter": {"reference": "Encounter/enc-bench-1"},
        "authoredOn": "2025-07-01T10:12:00-07:00",
        "requester": {"reference": "Practitioner/pract-ramirez", "display": "Elena Ramirez, MD"},
        "dosageInstruction": [{"text": "8 mg by mouth every 8 hours as needed for nausea"}]
    })
}
