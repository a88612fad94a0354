//! Reading the FHIR CodeSystems and ValueSets of `fhir-profiles/` into the lookup structures,
//! checking each file (metadata, SOURCE, the compose rules this loader understands) and failing
//! at start-up, naming the file, on anything else.

use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde_json::Value;

use super::*;
use crate::assets::{Assets, Folder};

impl Terminology {
    /// Read every `fhir-profiles/codesystems/*.json` and `fhir-profiles/valuesets/*.json`,
    /// check them and build the lookup structures. Fails, naming the file, on anything the
    /// loader does not understand, and when a value set of [`ValueSetId::ALL`] is missing.
    pub fn load(assets: &Assets) -> Result<Self, TerminologyError> {
        // Project CodeSystems first: value sets may include them whole or check codes against them.
        let mut code_systems: HashMap<String, HashSet<String>> = HashMap::new();
        for file in assets.list(Folder::Profiles, "codesystems", ".json") {
            let json = assets.read_json(Folder::Profiles, &file)?;
            let (url, codes) = parse_code_system(&file, &json)?;
            if code_systems.insert(url.clone(), codes).is_some() {
                return Err(invalid(&file, format!("duplicate CodeSystem url {url}")));
            }
        }

        let mut parsed = Vec::new();
        for file in assets.list(Folder::Profiles, "valuesets", ".json") {
            let json = assets.read_json(Folder::Profiles, &file)?;
            parsed.push(parse_value_set(&file, &json, &code_systems)?);
        }

        let mut by_url = HashMap::new();
        for (i, vs) in parsed.iter().enumerate() {
            if by_url.insert(vs.url.clone(), i).is_some() {
                return Err(invalid(
                    &vs.file,
                    format!("duplicate ValueSet url {}", vs.url),
                ));
            }
        }

        let mut sets = Vec::with_capacity(parsed.len());
        for vs in &parsed {
            let mut include = Vec::with_capacity(vs.include.len());
            for inc in &vs.include {
                include.push(match inc {
                    ParsedInclude::System(rule) => IncludeRule::System(rule.clone()),
                    ParsedInclude::ValueSet(url) => {
                        let idx = by_url
                            .get(url.split('|').next().unwrap_or(url))
                            .ok_or_else(|| {
                                invalid(&vs.file, format!("includes unknown value set {url}"))
                            })?;
                        IncludeRule::ValueSet(*idx)
                    }
                });
            }
            sets.push(CompiledValueSet {
                file: vs.file.clone(),
                url: vs.url.clone(),
                include,
                exclude: vs.exclude.clone(),
            });
        }

        let mut terminology = Terminology {
            sets,
            by_url,
            by_id: HashMap::new(),
        };
        for (i, vs) in parsed.iter().enumerate() {
            terminology
                .check_nesting(i, &mut Vec::new())
                .map_err(|m| invalid(&vs.file, m))?;
        }
        for id in ValueSetId::ALL {
            let url = id.url();
            let Some(&idx) = terminology.by_url.get(&url) else {
                return Err(TerminologyError::Missing { url });
            };
            terminology.by_id.insert(id, idx);
        }
        for id in ValueSetId::OBSERVATION_CODES {
            terminology.enumerate(id).map_err(|e| {
                invalid(
                    &e.file,
                    format!(
                        "{}; the value set {} lists the Observation codes the `observations` \
                         prefetch query asks for, so every code must be listed as a concept",
                        e.message,
                        id.slug()
                    ),
                )
            })?;
        }
        Ok(terminology)
    }
}

fn required_str<'a>(file: &str, json: &'a Value, key: &str) -> Result<&'a str, TerminologyError> {
    match json.get(key).and_then(Value::as_str).map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(invalid(file, format!("`{key}` must be a non-empty string"))),
    }
}

/// The metadata every terminology file must carry; `description` must name its SOURCE.
fn check_metadata<'a>(
    file: &str,
    json: &'a Value,
    resource_type: &str,
) -> Result<&'a str, TerminologyError> {
    if json.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(invalid(
            file,
            format!("resourceType must be \"{resource_type}\""),
        ));
    }
    let url = required_str(file, json, "url")?;
    for key in ["name", "title", "status"] {
        required_str(file, json, key)?;
    }
    let description = required_str(file, json, "description")?;
    if !description.contains("SOURCE") {
        return Err(invalid(
            file,
            "`description` must name the SOURCE the codes were checked against",
        ));
    }
    Ok(url)
}

fn parse_code_system(
    file: &str,
    json: &Value,
) -> Result<(String, HashSet<String>), TerminologyError> {
    let url = check_metadata(file, json, "CodeSystem")?.to_owned();
    let mut codes = HashSet::new();
    fn walk(
        file: &str,
        concepts: &Value,
        codes: &mut HashSet<String>,
    ) -> Result<(), TerminologyError> {
        let Some(list) = concepts.as_array() else {
            return Err(invalid(file, "`concept` must be an array"));
        };
        for (i, c) in list.iter().enumerate() {
            let code = c
                .get("code")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(file, format!("concept[{i}].code must be a string")))?;
            codes.insert(code.to_owned());
            if let Some(children) = c.get("concept") {
                walk(file, children, codes)?;
            }
        }
        Ok(())
    }
    walk(
        file,
        json.get("concept").unwrap_or(&Value::Array(Vec::new())),
        &mut codes,
    )?;
    if codes.is_empty() {
        return Err(invalid(file, "a project CodeSystem must list its concepts"));
    }
    Ok((url, codes))
}

fn parse_value_set(
    file: &str,
    json: &Value,
    code_systems: &HashMap<String, HashSet<String>>,
) -> Result<ParsedValueSet, TerminologyError> {
    let url = check_metadata(file, json, "ValueSet")?.to_owned();
    let compose = json
        .get("compose")
        .ok_or_else(|| invalid(file, "`compose` is required"))?;
    let includes = compose
        .get("include")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid(file, "`compose.include` must be a non-empty array"))?;
    let mut include = Vec::with_capacity(includes.len());
    for (i, entry) in includes.iter().enumerate() {
        let at = format!("compose.include[{i}]");
        match (entry.get("system"), entry.get("valueSet")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    file,
                    format!("{at}: `system` together with `valueSet` is not supported"),
                ));
            }
            (None, Some(vs)) => {
                let list = vs
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| invalid(file, format!("{at}.valueSet must be an array")))?;
                for (j, v) in list.iter().enumerate() {
                    let u = v.as_str().ok_or_else(|| {
                        invalid(file, format!("{at}.valueSet[{j}] must be a string"))
                    })?;
                    include.push(ParsedInclude::ValueSet(u.trim().to_owned()));
                }
            }
            (Some(_), None) => {
                include.push(ParsedInclude::System(parse_system_rule(
                    file,
                    &at,
                    entry,
                    code_systems,
                )?));
            }
            (None, None) => {
                return Err(invalid(file, format!("{at} needs `system` or `valueSet`")));
            }
        }
    }
    let mut exclude = Vec::new();
    if let Some(excludes) = compose.get("exclude") {
        let list = excludes
            .as_array()
            .ok_or_else(|| invalid(file, "`compose.exclude` must be an array"))?;
        for (i, entry) in list.iter().enumerate() {
            let at = format!("compose.exclude[{i}]");
            if entry.get("valueSet").is_some() {
                return Err(invalid(
                    file,
                    format!("{at}: excluding a value set is not supported"),
                ));
            }
            exclude.push(parse_system_rule(file, &at, entry, code_systems)?);
        }
    }
    Ok(ParsedValueSet {
        file: file.to_owned(),
        url,
        include,
        exclude,
    })
}

fn parse_system_rule(
    file: &str,
    at: &str,
    entry: &Value,
    code_systems: &HashMap<String, HashSet<String>>,
) -> Result<SystemRule, TerminologyError> {
    let system = entry
        .get("system")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(file, format!("{at}.system must be a non-empty string")))?;
    // Rules hold the canonical system, so a file may name a system by an alias too.
    let system = canonical_system(system).to_owned();
    let project_codes = code_systems.get(&system);
    let mut codes = HashSet::new();
    let mut listed = Vec::new();
    if let Some(concepts) = entry.get("concept") {
        let list = concepts
            .as_array()
            .ok_or_else(|| invalid(file, format!("{at}.concept must be an array")))?;
        for (j, c) in list.iter().enumerate() {
            let code = c
                .get("code")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(file, format!("{at}.concept[{j}].code must be a string")))?;
            if let Some(known) = project_codes
                && !known.contains(code)
            {
                return Err(invalid(
                    file,
                    format!("{at}.concept[{j}]: {code} is not a code of {system}"),
                ));
            }
            if codes.insert(normalise_code(&system, code).into_owned()) {
                listed.push(code.to_owned());
            }
        }
    }
    let mut patterns = Vec::new();
    if let Some(filters) = entry.get("filter") {
        let list = filters
            .as_array()
            .ok_or_else(|| invalid(file, format!("{at}.filter must be an array")))?;
        for (j, f) in list.iter().enumerate() {
            let property = f.get("property").and_then(Value::as_str);
            let op = f.get("op").and_then(Value::as_str);
            let value = f.get("value").and_then(Value::as_str);
            match (property, op, value) {
                (Some("code"), Some("regex"), Some(v)) => {
                    // FHIR's regex filter matches the whole value, hence the anchors.
                    let re = Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                        invalid(file, format!("{at}.filter[{j}]: invalid regex: {e}"))
                    })?;
                    patterns.push(re);
                }
                _ => {
                    return Err(invalid(
                        file,
                        format!(
                            "{at}.filter[{j}]: only property \"code\" with op \"regex\" is supported"
                        ),
                    ));
                }
            }
        }
    }
    if codes.is_empty() && patterns.is_empty() {
        // A whole code system: only knowable for the project's own CodeSystems.
        match project_codes {
            Some(all) => {
                codes.extend(all.iter().map(|c| normalise_code(&system, c).into_owned()));
                listed.extend(all.iter().cloned());
                listed.sort();
            }
            None => {
                return Err(invalid(
                    file,
                    format!(
                        "{at} includes all of {system}; only the project's own CodeSystems can be \
                         included whole (list concepts or use a regex filter)"
                    ),
                ));
            }
        }
    }
    Ok(SystemRule {
        system,
        codes,
        listed,
        patterns,
    })
}
