use super::*;
use crate::assets::{Assets, Folder};
use std::path::PathBuf;

fn embedded() -> Terminology {
    Terminology::load(&Assets::embedded()).expect("embedded terminology loads")
}

/// A profiles override folder with one value set file replaced.
fn with_file(name: &str, content: &str) -> (PathBuf, Assets) {
    let dir = std::env::temp_dir().join(format!("iort-term-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("valuesets")).unwrap();
    std::fs::write(dir.join("valuesets").join(name), content).unwrap();
    let assets = Assets::with_overrides(Some(dir.clone()), None);
    (dir, assets)
}

#[test]
fn every_required_value_set_is_embedded() {
    let t = embedded();
    assert!(t.value_set_count() >= ValueSetId::ALL.len());
    for id in ValueSetId::ALL {
        assert!(t.by_url.contains_key(&id.url()), "{} missing", id.slug());
    }
}

#[test]
fn iort_codes_including_pcs_rule() {
    let t = embedded();
    use ValueSetId::IortProcedures as V;
    for code in ["77424", "77425", "77469", "0735T", "0735t"] {
        assert!(t.contains(V, uris::CPT, code), "{code}");
    }
    assert!(t.contains(V, uris::SNOMED_CT, "168524008"));
    assert!(t.contains(V, uris::ICD10_PCS, "DD073Z0"));
    assert!(t.contains(V, uris::ICD10_PCS, "dd073z0"));
    assert!(t.contains(V, uris::ICD10_PCS, "DW033Z0"));
    // Not intraoperative (qualifier Z), wrong section, wrong length, I/O never used in PCS.
    assert!(!t.contains(V, uris::ICD10_PCS, "DD073ZZ"));
    assert!(!t.contains(V, uris::ICD10_PCS, "0DTP0Z0"));
    assert!(!t.contains(V, uris::ICD10_PCS, "DD073Z00"));
    assert!(!t.contains(V, uris::ICD10_PCS, "DDO73Z0"));
    // "Other radiation" tables: 5th character C = intraoperative radiation therapy (IORT).
    for iort in ["DDY7CZZ", "ddy7czz", "D0Y0CZZ", "DTY0CZZ", "DVY0CZZ"] {
        assert!(t.contains(V, uris::ICD10_PCS, iort), "{iort}");
    }
    // Contact radiation / hyperthermia / plaque of the same table, beam (not Y), wrong tail.
    for not_iort in [
        "DDY77ZZ", "DDY78ZZ", "DDY7FZZ", "DD07CZZ", "DDY7C", "DIY7CZZ",
    ] {
        assert!(!t.contains(V, uris::ICD10_PCS, not_iort), "{not_iort}");
    }
    // Other radiotherapy, and the right code in the wrong system.
    assert!(!t.contains(V, uris::CPT, "77412"));
    assert!(!t.contains(V, uris::SNOMED_CT, "77425"));
    assert!(t.contains(ValueSetId::IortCptCodes, uris::CPT, "77425"));
    assert!(!t.contains(ValueSetId::IortCptCodes, uris::SNOMED_CT, "168524008"));
}

#[test]
fn icd10cm_with_or_without_dot() {
    let t = embedded();
    assert!(t.contains(ValueSetId::RectalCancer, uris::ICD10_CM, "C20"));
    assert!(t.contains(ValueSetId::RectalCancer, uris::ICD10_CM, " c20 "));
    for not_rectal in ["C18.7", "C187", "C19", "C21.1", "C211"] {
        assert!(!t.contains(ValueSetId::RectalCancer, uris::ICD10_CM, not_rectal));
        assert!(t.contains(ValueSetId::AnyCancer, uris::ICD10_CM, not_rectal));
    }
    for cancer in ["C00.0", "C50.912", "C7A.026", "C4A.9", "C96.Z", "C20"] {
        assert!(
            t.contains(ValueSetId::AnyCancer, uris::ICD10_CM, cancer),
            "{cancer}"
        );
    }
    for benign in ["D01.2", "C97", "Z85.048", "K62.5"] {
        assert!(
            !t.contains(ValueSetId::AnyCancer, uris::ICD10_CM, benign),
            "{benign}"
        );
    }
    assert!(t.contains(ValueSetId::AnyCancer, uris::SNOMED_CT, "93984006"));
    assert!(t.contains(ValueSetId::AnyCancer, uris::SNOMED_CT, "254837009"));
}

#[test]
fn aliases_match_the_same_members() {
    let t = embedded();
    use ValueSetId::*;
    let cm_oid = "urn:oid:2.16.840.1.113883.6.90";
    for code in ["C20", "c20", " C20 "] {
        assert!(t.contains(RectalCancer, cm_oid, code), "{code}");
    }
    assert!(t.contains(RectalCancer, "URN:OID:2.16.840.1.113883.6.90", "C20"));
    assert!(!t.contains(RectalCancer, cm_oid, "C18.7"));
    assert!(t.contains(AnyCancer, cm_oid, "C18.7"));
    assert!(t.contains(SecondaryCancer, cm_oid, "C78.5"));
    let sct_oid = "urn:oid:2.16.840.1.113883.6.96";
    assert!(t.contains(RectalCancer, sct_oid, "93984006"));
    assert!(t.contains(T4Category, sct_oid, "1228944003"));
    let loinc_oid = "urn:oid:2.16.840.1.113883.6.1";
    assert!(t.contains(TCategoryObservation, loinc_oid, "21905-5"));
    assert!(t.contains(MarginDistanceObservation, loinc_oid, "33737-8"));
    assert!(t.contains(IortCptCodes, "urn:oid:2.16.840.1.113883.6.12", "77425"));
    for pcs in [
        "urn:oid:2.16.840.1.113883.6.4",
        "http://www.icd10data.com/icd10pcs",
    ] {
        assert!(t.contains(IortProcedures, pcs, "dd073z0"), "{pcs}");
        assert!(t.contains(IortProcedures, pcs, "DDY7CZZ"), "{pcs}");
    }
    // An OID that is not a registered alias is just another system.
    assert!(!t.contains(RectalCancer, "urn:oid:2.16.840.1.113883.6.91", "C20"));
    assert_eq!(
        canonical_system(" urn:oid:2.16.840.1.113883.6.3 "),
        uris::ICD10
    );
    assert_eq!(canonical_system("urn:local"), "urn:local");
    assert_eq!(system_label(cm_oid), "ICD-10-CM");
    assert_eq!(system_label(sct_oid), "SNOMED CT");
    assert_eq!(system_label(uris::ICD10), "ICD-10");
    assert_eq!(system_label("urn:local"), "urn:local");
    assert!(same_code(cm_oid, "c18.7", uris::ICD10_CM, "C187"));
    assert!(!same_code(uris::ICD10, "C18.7", uris::ICD10_CM, "C18.7"));
}

#[test]
fn who_icd10_is_its_own_system_with_explicit_includes() {
    let t = embedded();
    use ValueSetId::*;
    for (system, expected) in [(uris::ICD10, true), ("urn:oid:2.16.840.1.113883.6.3", true)] {
        assert_eq!(t.contains(RectalCancer, system, "C20"), expected);
        assert_eq!(t.contains(RectalCancer, system, "c20"), expected);
    }
    for other in ["C18.7", "C187", "C19", "C21.1", "C50.9", "C97"] {
        assert!(!t.contains(RectalCancer, uris::ICD10, other), "{other}");
        assert!(t.contains(AnyCancer, uris::ICD10, other), "{other}");
    }
    for secondary in ["C78.7", "C787", "C77.0", "C79.5"] {
        assert!(
            t.contains(SecondaryCancer, uris::ICD10, secondary),
            "{secondary}"
        );
    }
    assert!(!t.contains(SecondaryCancer, uris::ICD10, "C76.5"));
    for not_cancer in ["D01.2", "Z85.0", "C4A.9", "C98"] {
        assert!(
            !t.contains(AnyCancer, uris::ICD10, not_cancer),
            "{not_cancer}"
        );
    }
    // C97 exists in WHO ICD-10 only.
    assert!(!t.contains(AnyCancer, uris::ICD10_CM, "C97"));
}

#[test]
fn snomed_cancer_recognition() {
    let t = embedded();
    use ValueSetId::*;
    let sct = uris::SNOMED_CT;
    // Rectum primaries (eCQM colorectal expansion), including local recurrence.
    for rectal in [
        "363351006",
        "93984006",
        "254582000",
        "1268633007",
        "314966008",
        "448994001",
    ] {
        assert!(t.contains(RectalCancer, sct, rectal), "{rectal}");
        assert!(t.contains(AnyCancer, sct, rectal), "{rectal}");
        assert!(!t.contains(SecondaryCancer, sct, rectal), "{rectal}");
    }
    // Known other cancers: Synthea colon, mCODE example breast, lung, prostate, and the
    // ambiguous or non-C20 colorectal concepts.
    for other in [
        "109838007",
        "353431000119107",
        "93761005",
        "363406005",
        "254837009",
        "254637007",
        "423121009",
        "399068003",
        "93980002",
        "187760008",
        "96281000119107",
        "443488001",
        "713573006",
        "1156797006",
        "369451000",
        "93870000",
    ] {
        assert!(t.contains(AnyCancer, sct, other), "{other}");
        assert!(!t.contains(RectalCancer, sct, other), "{other}");
    }
    // Secondary (metastatic): never rectal, even when the site is the rectum.
    for secondary in [
        "128462008",
        "94381002",
        "94391008",
        "94222008",
        "94225005",
        "94260004",
        "94513006",
        "285612000",
        "1237484006",
        "1269123008",
    ] {
        assert!(t.contains(SecondaryCancer, sct, secondary), "{secondary}");
        assert!(!t.contains(RectalCancer, sct, secondary), "{secondary}");
    }
    // Not cancers: history situations, hereditary syndromes, a T category finding, benign.
    for not_cancer in [
        "429084005",
        "315058005",
        "395705003",
        "126906006",
        "68496003",
    ] {
        assert!(!t.contains(AnyCancer, sct, not_cancer), "{not_cancer}");
        assert!(
            !t.contains(SecondaryCancer, sct, not_cancer),
            "{not_cancer}"
        );
    }
}

/// The SNOMED CT concepts listed in an embedded value set file, with their displays.
fn listed_concepts(slug: &str) -> Vec<(String, String)> {
    let json = Assets::embedded()
        .read_json(Folder::Profiles, &format!("valuesets/{slug}.json"))
        .unwrap();
    json["compose"]["include"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["system"] == uris::SNOMED_CT)
        .flat_map(|i| i["concept"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["code"].as_str().unwrap().to_owned(),
                c["display"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn rectal_list_is_rectum_only_and_disjoint_from_secondaries() {
    let t = embedded();
    let rectal = listed_concepts("rectal-cancer");
    assert!(rectal.len() >= 10);
    for (code, display) in &rectal {
        let d = display.to_lowercase();
        assert!(d.contains("rectum"), "{code} {display}");
        for ambiguous in ["rectosigmoid", "anus", "anorect", "colon", "metasta"] {
            assert!(!d.contains(ambiguous), "{code} {display}");
        }
        assert!(!t.contains(ValueSetId::SecondaryCancer, uris::SNOMED_CT, code));
    }
    // No listed other cancer is a rectal one in disguise.
    for (code, display) in listed_concepts("any-cancer") {
        let d = display.to_lowercase();
        if d.contains("rectum") && !t.contains(ValueSetId::RectalCancer, uris::SNOMED_CT, &code) {
            assert!(
                [
                    "rectosigmoid",
                    "anus",
                    "anorect",
                    "colon",
                    "extension",
                    "kaposi",
                    "stromal",
                    "carcinoid",
                    "neuroendocrine"
                ]
                .iter()
                .any(|a| d.contains(a)),
                "{code} {display}"
            );
        }
    }
}

#[test]
fn t_categories() {
    let t = embedded();
    for c in ["1228944003", "1229865000", "1228924009"] {
        assert!(t.contains(ValueSetId::T4Category, uris::SNOMED_CT, c));
        assert!(!t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, c));
    }
    for c in ["T4", "cT4", "pT4a", "ypT4b", "rpT4", "T4e"] {
        assert!(t.contains(ValueSetId::T4Category, uris::AJCC, c), "{c}");
    }
    for c in [
        "T3",
        "cT3",
        "pT2",
        "ypT1a",
        "Tis",
        "pTis(DCIS)",
        "T0",
        "cT1mi",
    ] {
        assert!(
            t.contains(ValueSetId::BelowT4Category, uris::AJCC, c),
            "{c}"
        );
        assert!(!t.contains(ValueSetId::T4Category, uris::AJCC, c), "{c}");
    }
    for c in ["TX", "pTX", "T4x", "T", "N1"] {
        assert!(
            !t.contains(ValueSetId::BelowT4Category, uris::AJCC, c),
            "{c}"
        );
        assert!(!t.contains(ValueSetId::T4Category, uris::AJCC, c), "{c}");
    }
    assert!(t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, "1228938002"));
    // Older SNOMED CT T category findings (Synthea, mCODE STU1 guidance, eCQM).
    assert!(t.contains(ValueSetId::T4Category, uris::SNOMED_CT, "65565005"));
    assert!(!t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, "65565005"));
    for c in [
        "58790005",
        "23351008",
        "261650005",
        "67673008",
        "14410001",
        "395705003",
    ] {
        assert!(
            t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, c),
            "{c}"
        );
        assert!(
            !t.contains(ValueSetId::T4Category, uris::SNOMED_CT, c),
            "{c}"
        );
    }
    // TX category (67101007) says nothing either way.
    assert!(!t.contains(ValueSetId::BelowT4Category, uris::SNOMED_CT, "67101007"));
    assert!(!t.contains(ValueSetId::T4Category, uris::SNOMED_CT, "67101007"));
}

#[test]
fn observation_codes_follow_mcode_max_value_sets() {
    let t = embedded();
    use ValueSetId::*;
    // TNMPrimaryTumorStagingTypeMaxVS and TNMStageGroupStagingTypeMaxVS (mCODE STU4).
    for c in ["78873005", "399504009", "384625004"] {
        assert!(t.contains(TCategoryObservation, uris::SNOMED_CT, c), "{c}");
    }
    for c in ["21905-5", "21899-0", "21911-3"] {
        assert!(t.contains(TCategoryObservation, uris::LOINC, c), "{c}");
    }
    for c in ["399390009", "399537006", "399588009"] {
        assert!(t.contains(StageGroupObservation, uris::SNOMED_CT, c), "{c}");
    }
    for c in ["21908-9", "21902-2", "21914-7"] {
        assert!(t.contains(StageGroupObservation, uris::LOINC, c), "{c}");
    }
    // N category codes are not T category codes.
    assert!(!t.contains(TCategoryObservation, uris::LOINC, "21906-3"));
    assert!(!t.contains(TCategoryObservation, uris::SNOMED_CT, "399534004"));
    assert!(t.contains(MarginFindingObservation, uris::LOINC, "84892-9"));
    assert!(t.contains(MarginFindingObservation, uris::SNOMED_CT, "395536008"));
    assert!(t.contains(MarginPositive, uris::SNOMED_CT, "1222639002"));
    assert!(t.contains(MarginClear, uris::SNOMED_CT, "1222638005"));
}

#[test]
fn project_margin_codes_and_status_codes() {
    let t = embedded();
    let cs = format!("{CANONICAL_BASE}/CodeSystem/surgical-margin-status");
    assert!(t.contains(ValueSetId::MarginClose, &cs, "close"));
    assert!(t.contains(ValueSetId::MarginPositive, &cs, "positive"));
    assert!(!t.contains(ValueSetId::MarginPositive, &cs, "close"));
    assert!(t.contains_code(ValueSetId::ObservationUnusableStatus, "cancelled"));
    assert!(!t.contains_code(ValueSetId::ObservationUnusableStatus, "final"));
    assert!(t.contains_code(ValueSetId::CoverageActiveStatus, "active"));
    assert!(t.contains_code(ValueSetId::ConditionRecurrence, "recurrence"));
}

#[test]
fn observation_code_sets_enumerate_as_written() {
    let t = embedded();
    let all: Vec<String> = ValueSetId::OBSERVATION_CODES
        .iter()
        .flat_map(|id| t.enumerate(*id).unwrap())
        .map(|c| c.to_string())
        .collect();
    for expected in [
        "http://snomed.info/sct|78873005",
        "http://loinc.org|21911-3",
        "http://snomed.info/sct|399588009",
        "http://loinc.org|21914-7",
        "http://snomed.info/sct|395536008",
        "http://loinc.org|84892-9",
        "http://loinc.org|33737-8",
    ] {
        assert!(all.iter().any(|c| c == expected), "{expected} in {all:?}");
    }
    // Every enumerated concept is a member, and a regex-defined set is refused.
    for id in ValueSetId::OBSERVATION_CODES {
        for c in t.enumerate(id).unwrap() {
            assert!(t.contains(id, &c.system, &c.code), "{c}");
        }
    }
    let e = t.enumerate(ValueSetId::AnyCancer).unwrap_err();
    assert!(
        e.file.ends_with(".json") && e.message.contains("regex"),
        "{e:?}"
    );
    assert_eq!(
        Terminology::default().enumerate(ValueSetId::T4Category),
        Ok(vec![])
    );
}

#[test]
fn enumeration_follows_includes_drops_excludes_and_keeps_codes_as_written() {
    let inner = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/inner",
        "name":"I","title":"I","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"system":"http://hl7.org/fhir/sid/icd-10-cm",
          "concept":[{"code":"C18.7"},{"code":"C20"},{"code":"C187"}]}]}}"#;
    let (dir, _) = with_file("zz-inner.json", inner);
    // An override of a required set: the union of the inner set and LOINC, minus C20.
    let outer = r#"{"resourceType":"ValueSet",
        "url":"https://iort-cds.github.io/fhir/ValueSet/margin-distance-observation",
        "name":"O","title":"O","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"33737-8"}]},
          {"valueSet":["https://example.org/ValueSet/inner"]}],
          "exclude":[{"system":"http://hl7.org/fhir/sid/icd-10-cm","concept":[{"code":"c20"}]}]}}"#;
    std::fs::write(
        dir.join("valuesets/margin-distance-observation.json"),
        outer,
    )
    .unwrap();
    let assets = Assets::with_overrides(Some(dir.clone()), None);
    let t = Terminology::load(&assets).unwrap();
    let got: Vec<String> = t
        .enumerate(ValueSetId::MarginDistanceObservation)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "http://loinc.org|33737-8",
            "http://hl7.org/fhir/sid/icd-10-cm|C18.7"
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_observation_code_set_with_a_regex_filter_is_refused_at_load() {
    let vs = r#"{"resourceType":"ValueSet",
        "url":"https://iort-cds.github.io/fhir/ValueSet/t-category-observation",
        "name":"T","title":"T","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"21905-5"}]},
          {"system":"http://loinc.org","filter":[{"property":"code","op":"regex","value":"219\\d\\d-\\d"}]}]}}"#;
    let (dir, assets) = with_file("t-category-observation.json", vs);
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(
        err.contains("valuesets/t-category-observation.json")
            && err.contains("compose.include[1]")
            && err.contains("regex")
            && err.contains("prefetch"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn default_terminology_is_empty() {
    let t = Terminology::default();
    assert!(!t.contains(ValueSetId::IortCptCodes, uris::CPT, "77425"));
    assert!(!t.contains_code(ValueSetId::CoverageActiveStatus, "active"));
}

#[test]
fn malformed_file_is_named() {
    let (dir, assets) = with_file("rectal-cancer.json", "{ not json");
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(err.contains("valuesets/rectal-cancer.json"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unsupported_filter_is_rejected_with_file_name() {
    let vs = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/x","name":"X",
        "title":"X","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"system":"http://snomed.info/sct",
          "filter":[{"property":"concept","op":"is-a","value":"363346000"}]}]}}"#;
    let (dir, assets) = with_file("zz-extra.json", vs);
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(err.contains("valuesets/zz-extra.json"), "{err}");
    assert!(err.contains("regex"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn description_must_name_source_and_includes_must_resolve() {
    let no_source = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/y",
        "name":"Y","title":"Y","status":"draft","description":"codes",
        "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"1-8"}]}]}}"#;
    let (dir, assets) = with_file("zz-y.json", no_source);
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(err.contains("zz-y.json") && err.contains("SOURCE"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();

    let dangling = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/z",
        "name":"Z","title":"Z","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"valueSet":["https://example.org/ValueSet/nope"]}]}}"#;
    let (dir, assets) = with_file("zz-z.json", dangling);
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(err.contains("zz-z.json") && err.contains("nope"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn include_cycle_is_rejected() {
    let a = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/a",
        "name":"A","title":"A","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"valueSet":["https://example.org/ValueSet/b"]}]}}"#;
    let b = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/b",
        "name":"B","title":"B","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"valueSet":["https://example.org/ValueSet/a"]}]}}"#;
    let (dir, _) = with_file("zz-a.json", a);
    std::fs::write(dir.join("valuesets/zz-b.json"), b).unwrap();
    let assets = Assets::with_overrides(Some(dir.clone()), None);
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(err.contains("cycle"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_required_value_set_is_reported() {
    // Overriding a required file with a different url leaves the required url missing.
    let other = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/moved",
        "name":"M","title":"M","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"system":"http://loinc.org","concept":[{"code":"1-8"}]}]}}"#;
    let (dir, assets) = with_file("rectum-body-site.json", other);
    let err = Terminology::load(&assets).unwrap_err();
    assert!(
        matches!(err, TerminologyError::Missing { ref url } if url.ends_with("/rectum-body-site"))
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unknown_project_code_is_rejected() {
    let vs = r#"{"resourceType":"ValueSet","url":"https://example.org/ValueSet/w",
        "name":"W","title":"W","status":"draft","description":"SOURCE: test",
        "compose":{"include":[{"system":"https://iort-cds.github.io/fhir/CodeSystem/surgical-margin-status",
          "concept":[{"code":"maybe"}]}]}}"#;
    let (dir, assets) = with_file("zz-w.json", vs);
    let err = Terminology::load(&assets).unwrap_err().to_string();
    assert!(err.contains("zz-w.json") && err.contains("maybe"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn units_and_profiles() {
    assert_eq!(
        length_unit_to_mm_exponent(Some(uris::UCUM), Some("cm"), None),
        Some(1)
    );
    assert_eq!(length_unit_to_mm_exponent(None, Some("um"), None), Some(-3));
    assert_eq!(length_unit_to_mm_exponent(None, None, Some("mm")), Some(0));
    assert_eq!(
        length_unit_to_mm_exponent(None, None, Some("\u{b5}m")),
        Some(-3)
    );
    assert_eq!(
        length_unit_to_mm_exponent(Some(uris::UCUM), Some("kg"), None),
        None
    );
    assert_eq!(
        length_unit_to_mm_exponent(Some("urn:local"), Some("x"), Some("cm")),
        Some(1)
    );
    assert!(is_cancer_condition_profile(
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition|4.0.0"
    ));
    assert!(!is_cancer_condition_profile(
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-condition"
    ));
    assert_eq!(system_label(uris::SNOMED_CT), "SNOMED CT");
    assert_eq!(normalise_code(uris::ICD10_CM, "c18.7"), "C187");
}
