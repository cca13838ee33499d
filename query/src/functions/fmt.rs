//! Go-compatible float formatting, for texts Prometheus builds with
//! `strconv.FormatFloat` (label values of `count_values`, and sample values
//! in the HTTP API) and `%g` (annotation messages).

/// `strconv.FormatFloat(v, 'f', -1, 64)`: shortest digits, no exponent.
pub fn format_float_f(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    // Rust's Display prints the shortest round-trip digits without an
    // exponent, which is what Go's 'f' with precision -1 does.
    format!("{v}")
}

/// Go's `%g` / `FormatFloat(v, 'g', -1, 64)`.
pub fn format_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    // Shortest digits in scientific form, e.g. "1.25e-5".
    let sci = format!("{v:e}");
    let (mant, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        format!("{v}")
    }
}

/// Go's `%f` (six decimals).
pub(crate) fn format_f6(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    format!("{v:.6}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(format_float_f(1e100).len(), 101);
        assert_eq!(format_float_f(0.1), "0.1");
        assert_eq!(format_float_f(f64::INFINITY), "+Inf");
        assert_eq!(format_g(1.1), "1.1");
        assert_eq!(format_g(f64::NAN), "NaN");
        assert_eq!(format_g(1e21), "1e+21");
        assert_eq!(format_g(0.00001), "1e-05");
        assert_eq!(format_g(-2.0), "-2");
    }
}
