//! Numbers as the evidence and reasons show them.

/// E-values span many orders of magnitude: 0.003, 12.4, 2.1e5.
pub fn fmt_e(e: f64) -> String {
    if e >= 1e5 || (e > 0.0 && e < 1e-2) {
        format!("{e:.1e}")
    } else if e >= 100.0 {
        format!("{e:.0}")
    } else {
        format!("{e:.2}")
    }
}
