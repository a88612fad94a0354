//! Filling CDS Hooks 2.0 prefetch tokens (`{{context.patientId}}`, `{{userPractitionerId}}` ...)
//! from the hook context, so that a key the client did not prefetch is fetched with exactly the
//! query the client would have run.
//!
//! Every value is percent-encoded as an RFC 3986 unreserved-only string before it is put into
//! the query: a context value is caller data, and `p1&_include=*` or `../Patient` must stay one
//! search value or one id, never become new parameters or path segments. A token with no value
//! in this call (no `encounterId`, a `userId` that is not a Practitioner for
//! `{{userPractitionerId}}`) cannot be filled; the caller then skips that key and notes why.

use crate::hook::HookContext;

/// Why a template could not be filled. Names the token, never a context value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the prefetch token {{{{{0}}}}} has no value in this call")]
    NoValue(String),
    #[error("the prefetch token {{{{{0}}}}} is not a CDS Hooks 2.0 token")]
    Unknown(String),
    #[error("the value of the prefetch token {{{{{0}}}}} cannot be used in a query")]
    Unusable(String),
    #[error("the prefetch template has an unterminated {{{{")]
    Unterminated,
}

/// The template with every token replaced by its percent-encoded value.
pub fn fill(template: &str, context: &HookContext) -> Result<String, TokenError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TokenError::Unterminated)?;
        let token = after[..end].trim();
        let value = value_of(token, context)?;
        if value.is_empty() {
            return Err(TokenError::NoValue(token.to_owned()));
        }
        // `.` and `..` are unreserved, so they survive encoding, and URL parsing would then
        // treat `Patient/..` as a step up the path.
        if value == "." || value == ".." {
            return Err(TokenError::Unusable(token.to_owned()));
        }
        out.push_str(&encode(value));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn value_of<'c>(token: &str, c: &'c HookContext) -> Result<&'c str, TokenError> {
    let none = || TokenError::NoValue(token.to_owned());
    match token {
        "context.patientId" => Ok(&c.patient_id),
        "context.userId" => Ok(&c.user_id),
        "context.encounterId" => c.encounter_id.as_deref().ok_or_else(none),
        "userPractitionerId" => user_id_of(&c.user_id, "Practitioner").ok_or_else(none),
        "userPractitionerRoleId" => user_id_of(&c.user_id, "PractitionerRole").ok_or_else(none),
        "userPatientId" => user_id_of(&c.user_id, "Patient").ok_or_else(none),
        "userRelatedPersonId" => user_id_of(&c.user_id, "RelatedPerson").ok_or_else(none),
        other => Err(TokenError::Unknown(other.to_owned())),
    }
}

/// The id in `userId` when it refers to a resource of type `wanted` (`Practitioner/123`, or an
/// absolute `https://ehr/fhir/Practitioner/123`).
fn user_id_of<'u>(user_id: &'u str, wanted: &str) -> Option<&'u str> {
    let mut parts = user_id.rsplit('/');
    let id = parts.next()?;
    let rtype = parts.next()?;
    (rtype == wanted && !id.is_empty()).then_some(id)
}

/// Percent-encode all but the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> HookContext {
        HookContext {
            user_id: "Practitioner/prac-17".to_owned(),
            patient_id: "pat-rc-001".to_owned(),
            encounter_id: Some("enc-4471".to_owned()),
            ..HookContext::default()
        }
    }

    #[test]
    fn fills_context_and_user_tokens() {
        let c = ctx();
        assert_eq!(
            fill("Patient/{{context.patientId}}", &c).unwrap(),
            "Patient/pat-rc-001"
        );
        assert_eq!(
            fill(
                "Observation?patient={{ context.patientId }}&encounter={{context.encounterId}}",
                &c
            )
            .unwrap(),
            "Observation?patient=pat-rc-001&encounter=enc-4471"
        );
        assert_eq!(
            fill("Practitioner/{{userPractitionerId}}", &c).unwrap(),
            "Practitioner/prac-17"
        );
        assert_eq!(
            fill("Task?owner={{context.userId}}", &c).unwrap(),
            "Task?owner=Practitioner%2Fprac-17"
        );
        assert_eq!(
            fill("Coverage?status=active", &c).unwrap(),
            "Coverage?status=active"
        );
    }

    #[test]
    fn absolute_user_ids_give_their_id() {
        let mut c = ctx();
        c.user_id = "https://ehr.example.org/fhir/PractitionerRole/r9".to_owned();
        assert_eq!(
            fill("PractitionerRole/{{userPractitionerRoleId}}", &c).unwrap(),
            "PractitionerRole/r9"
        );
        assert_eq!(
            fill("Practitioner/{{userPractitionerId}}", &c),
            Err(TokenError::NoValue("userPractitionerId".to_owned()))
        );
    }

    #[test]
    fn unfillable_tokens_are_named() {
        let mut c = ctx();
        c.encounter_id = None;
        let e = fill("Encounter/{{context.encounterId}}", &c).unwrap_err();
        assert_eq!(e, TokenError::NoValue("context.encounterId".to_owned()));
        assert_eq!(
            e.to_string(),
            "the prefetch token {{context.encounterId}} has no value in this call"
        );
        assert_eq!(
            fill("Patient/{{userPatientId}}", &c),
            Err(TokenError::NoValue("userPatientId".to_owned()))
        );
        c.patient_id = String::new();
        assert!(matches!(
            fill("Patient/{{context.patientId}}", &c),
            Err(TokenError::NoValue(_))
        ));
        assert!(matches!(
            fill("X?a={{context.draftOrders}}", &ctx()),
            Err(TokenError::Unknown(_))
        ));
        assert_eq!(
            fill("X?a={{context.patientId", &ctx()),
            Err(TokenError::Unterminated)
        );
    }

    #[test]
    fn values_cannot_inject_parameters_or_segments() {
        let mut c = ctx();
        c.patient_id = "p1&_include=*#x".to_owned();
        assert_eq!(
            fill("Condition?patient={{context.patientId}}", &c).unwrap(),
            "Condition?patient=p1%26_include%3D%2A%23x"
        );
        c.patient_id = "../../admin".to_owned();
        assert_eq!(
            fill("Patient/{{context.patientId}}", &c).unwrap(),
            "Patient/..%2F..%2Fadmin"
        );
        c.patient_id = "..".to_owned();
        assert_eq!(
            fill("Patient/{{context.patientId}}", &c),
            Err(TokenError::Unusable("context.patientId".to_owned()))
        );
        c.patient_id = "é 1".to_owned();
        assert_eq!(
            fill("Patient/{{context.patientId}}", &c).unwrap(),
            "Patient/%C3%A9%201"
        );
    }
}
