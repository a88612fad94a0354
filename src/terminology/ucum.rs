//! Lengths in UCUM (and in the words EHRs put in `Quantity.unit`), for margin distances.

use super::uris;

/// The power of ten that turns a length in the given unit into millimetres (`cm` -> 1,
/// `um` -> -3), or `None` for a unit that is not a length this service understands.
///
/// The UCUM `code` is used when the system is UCUM or absent; otherwise (or when the code is
/// missing) the human-readable `unit` is tried, which is how many EHRs fill Quantity.
pub fn length_unit_to_mm_exponent(
    system: Option<&str>,
    code: Option<&str>,
    unit: Option<&str>,
) -> Option<i32> {
    fn ucum(code: &str) -> Option<i32> {
        match code.trim() {
            "mm" => Some(0),
            "cm" => Some(1),
            "um" => Some(-3),
            "m" => Some(3),
            _ => None,
        }
    }
    fn text(unit: &str) -> Option<i32> {
        let u = unit.trim().to_ascii_lowercase();
        match u.as_str() {
            "mm" | "millimeter" | "millimeters" | "millimetre" | "millimetres" => Some(0),
            "cm" | "centimeter" | "centimeters" | "centimetre" | "centimetres" => Some(1),
            "um" | "micrometer" | "micrometers" | "micrometre" | "micrometres" | "micron"
            | "microns" => Some(-3),
            _ => match unit.trim() {
                "\u{b5}m" | "\u{3bc}m" => Some(-3),
                _ => None,
            },
        }
    }
    let ucum_code = match system {
        None => code,
        Some(s) if s.trim() == uris::UCUM => code,
        Some(_) => None,
    };
    ucum_code.and_then(ucum).or_else(|| unit.and_then(text))
}
