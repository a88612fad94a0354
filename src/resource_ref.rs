//! How the service names a resource on cards, in record issues, evidence and logs: `Type/id`,
//! the form of a FHIR relative reference, which an EHR analyst can look up directly.
//!
//! One convention for a resource sent without an id: `Type/(no id)`. Evidence must still name
//! the resource, and `(no id)` can never be a FHIR id (ids are `[A-Za-z0-9\-.]{1,64}`), so the
//! name never matches a real reference: an order without an id is never "selected", a record
//! issue without an id never silences another resource's.

use std::fmt;

/// `Type/id` of a resource, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceRef<'a> {
    pub resource_type: &'a str,
    pub id: Option<&'a str>,
}

impl<'a> ResourceRef<'a> {
    pub fn new(resource_type: &'a str, id: Option<&'a str>) -> Self {
        Self { resource_type, id }
    }

    /// Whether `reference` (a relative `Type/id`, as in CDS Hooks `selections`) names this
    /// resource. Never true for a resource without an id.
    pub fn is_named_by(&self, reference: &str) -> bool {
        match (self.id, reference.split_once('/')) {
            (Some(id), Some((resource_type, other))) => {
                resource_type == self.resource_type && other == id
            }
            _ => false,
        }
    }

    /// A resource contained in this one (`ServiceRequest/o1#dx`), as FHIR names it: never as
    /// a resource of the record it is not.
    pub fn contained(&self, local_id: Option<&str>) -> String {
        format!("{self}#{}", local_id.unwrap_or(NO_ID))
    }
}

const NO_ID: &str = "(no id)";

impl fmt::Display for ResourceRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.resource_type, self.id.unwrap_or(NO_ID))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_is_named_type_slash_id_and_without_an_id_never_matches() {
        let with = ResourceRef::new("ServiceRequest", Some("o1"));
        let without = ResourceRef::new("ServiceRequest", None);
        assert_eq!(with.to_string(), "ServiceRequest/o1");
        assert_eq!(without.to_string(), "ServiceRequest/(no id)");
        assert!(with.is_named_by("ServiceRequest/o1"));
        assert!(!with.is_named_by("ServiceRequest/o2"));
        assert!(!with.is_named_by("MedicationRequest/o1"));
        assert!(!with.is_named_by("o1"));
        assert!(!without.is_named_by("ServiceRequest/(no id)"));
        assert!(!without.is_named_by("ServiceRequest/"));
        assert_eq!(with.contained(Some("dx")), "ServiceRequest/o1#dx");
        assert_eq!(with.contained(None), "ServiceRequest/o1#(no id)");
    }
}
