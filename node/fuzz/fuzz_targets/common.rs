//! Shared body of the parser fuzz targets: parse arbitrary bytes to the end
//! and check what every entry promises, so that any panic, hang or broken
//! invariant is a crash libFuzzer keeps.

#[path = "../../src/scrape/exposition/mod.rs"]
#[allow(dead_code, unreachable_pub)]
pub mod exposition;

use exposition::{Entry, Format, Parser};

pub fn run(data: &[u8], format: Format) {
    let Ok(mut p) = Parser::new(data, format) else {
        assert!(std::str::from_utf8(data).is_err());
        return;
    };
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    let mut n = 0usize;
    loop {
        match p.next_entry() {
            Ok(Some(e)) => {
                n += 1;
                assert!(n <= lines, "more entries than lines");
                if let Entry::Sample(s) = e {
                    assert!(!s.name.is_empty());
                    for (name, _) in &s.labels {
                        assert!(!name.is_empty());
                    }
                }
            }
            Ok(None) => break,
            Err(err) => {
                assert!(err.line <= lines, "error line {} past {lines}", err.line);
                break;
            }
        }
    }
}
