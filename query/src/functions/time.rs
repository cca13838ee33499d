//! Time functions: `time`, `timestamp`, the UTC calendar functions
//! (`year`, `month`, `day_of_week`, …) and the query-range functions
//! `start`, `end`, `range`, `step`.

use crate::engine::eval::{unparen, Evaluator, RSeries, Val};
use crate::engine::QueryError;
use crate::parser::ast::{Call, Expr};
use pharos_storage::labels::Labels;

use super::vector_arg;

/// Civil date (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            if is_leap(y) {
                29
            } else {
                28
            }
        }
    }
}

/// A calendar field of a Unix time in seconds (truncated like Go's
/// `time.Unix(int64(v), 0)`), in UTC.
fn calendar(name: &str, v: f64) -> f64 {
    let secs = v as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    match name {
        "year" => y as f64,
        "month" => f64::from(m),
        "day_of_month" => f64::from(d),
        "day_of_week" => (days + 4).rem_euclid(7) as f64,
        "day_of_year" => {
            let before: u32 = (1..m).map(|mm| days_in_month(y, mm)).sum();
            f64::from(before + d)
        }
        "days_in_month" => f64::from(days_in_month(y, m)),
        "hour" => (sod / 3600) as f64,
        "minute" => ((sod % 3600) / 60) as f64,
        _ => f64::NAN,
    }
}

const CALENDAR: [&str; 8] = [
    "year",
    "month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
];

pub(crate) fn eval(ev: &mut Evaluator<'_>, c: &Call) -> Result<Option<Val>, QueryError> {
    let name = c.func.as_str();
    let n = ev.nsteps();
    let res = match name {
        "time" => Val::Scalar((0..n).map(|i| ev.ts(i) as f64 / 1000.0).collect()),
        "start" => Val::Scalar(vec![ev.qstart as f64 / 1000.0; n]),
        "end" => Val::Scalar(vec![ev.qend as f64 / 1000.0; n]),
        "range" => Val::Scalar(vec![(ev.qend - ev.qstart) as f64 / 1000.0; n]),
        "step" => Val::Scalar(vec![ev.qstep as f64 / 1000.0; n]),
        "timestamp" => {
            let Some(arg) = c.args.first() else {
                return Err(QueryError::bad("timestamp() needs an argument"));
            };
            let mut v = match unparen(arg) {
                // The selected sample's own timestamp, not the step's.
                Expr::VectorSelector(vs) => ev.eval_vector_selector(vs, true)?,
                other => {
                    let mut v = vector_arg(ev, other, name)?;
                    for s in &mut v {
                        for p in &mut s.points {
                            p.1 = p.0 as f64 / 1000.0;
                        }
                    }
                    v
                }
            };
            for s in &mut v {
                s.drop_name = true;
            }
            Val::Vector(v)
        }
        _ if CALENDAR.contains(&name) => {
            let mut v = match c.args.first() {
                Some(a) => vector_arg(ev, a, name)?,
                None => vec![RSeries {
                    labels: Labels::empty(),
                    drop_name: false,
                    points: (0..n)
                        .map(|i| (ev.ts(i), ev.ts(i) as f64 / 1000.0))
                        .collect(),
                }],
            };
            for s in &mut v {
                s.drop_name = true;
                s.points.retain(|p| !p.1.is_nan());
                for p in &mut s.points {
                    p.1 = calendar(name, p.1);
                }
            }
            v.retain(|s| !s.points.is_empty());
            Val::Vector(v)
        }
        _ => return Ok(None),
    };
    Ok(Some(res))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fields() {
        // 2006-01-02 22:04:05 UTC, a Monday.
        let t = 1_136_239_445.0;
        assert_eq!(calendar("year", t), 2006.0);
        assert_eq!(calendar("month", t), 1.0);
        assert_eq!(calendar("day_of_month", t), 2.0);
        assert_eq!(calendar("day_of_week", t), 1.0);
        assert_eq!(calendar("day_of_year", t), 2.0);
        assert_eq!(calendar("hour", t), 22.0);
        assert_eq!(calendar("minute", t), 4.0);
        assert_eq!(calendar("day_of_week", 0.0), 4.0);
        assert_eq!(calendar("day_of_year", 1_483_191_420.0), 366.0);
        assert_eq!(calendar("days_in_month", 1_454_284_800.0), 29.0);
        assert_eq!(calendar("year", -1.0), 1969.0);
    }
}
