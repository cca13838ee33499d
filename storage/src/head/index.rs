//! The head's in-memory inverted index: label name → value → sorted series
//! refs, plus the list of all refs, and matcher evaluation over it with
//! Prometheus's semantics (a missing label matches as the empty string).

use std::collections::HashMap;
use std::mem;

use crate::labels::{Labels, MatchType, Matcher};
use crate::postings::{
    expand, insert_sorted, intersect, merge, without, BoxPostings, ListPostings,
};

#[derive(Default)]
pub(crate) struct MemPostings {
    all: Vec<u64>,
    by_name: HashMap<Box<str>, HashMap<Box<str>, Vec<u64>>>,
}

fn list(v: &[u64]) -> BoxPostings<'_> {
    Box::new(ListPostings::new(v))
}

impl MemPostings {
    pub(crate) fn add(&mut self, sref: u64, labels: &Labels) {
        insert_sorted(&mut self.all, sref);
        for (n, v) in labels.iter() {
            let values = match self.by_name.get_mut(n) {
                Some(m) => m,
                None => self.by_name.entry(n.into()).or_default(),
            };
            match values.get_mut(v) {
                Some(l) => insert_sorted(l, sref),
                None => {
                    // Exact capacity: most values of high-cardinality labels
                    // (instance, pod, ...) hold one ref forever.
                    values.insert(v.into(), vec![sref]);
                }
            }
        }
    }

    /// Removes `refs` (sorted) whose label sets are `labels`.
    pub(crate) fn remove(&mut self, removed: &[(u64, Labels)]) {
        if removed.is_empty() {
            return;
        }
        let mut sorted: Vec<u64> = removed.iter().map(|r| r.0).collect();
        sorted.sort_unstable();
        let gone = |r: &u64| sorted.binary_search(r).is_ok();
        self.all.retain(|r| !gone(r));
        // Each affected list is filtered once, however many refs it loses.
        let mut touched: Vec<(&str, &str)> = removed.iter().flat_map(|(_, l)| l.iter()).collect();
        touched.sort_unstable();
        touched.dedup();
        for (n, v) in touched {
            let Some(values) = self.by_name.get_mut(n) else {
                continue;
            };
            if let Some(l) = values.get_mut(v) {
                l.retain(|r| !gone(r));
                if l.is_empty() {
                    values.remove(v);
                } else if l.capacity() > 2 * l.len() + 4 {
                    l.shrink_to_fit();
                }
            }
            if values.is_empty() {
                self.by_name.remove(n);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn all(&self) -> &[u64] {
        &self.all
    }

    /// Sorted label names with at least one series.
    pub(crate) fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.by_name.keys().map(|k| k.to_string()).collect();
        v.sort_unstable();
        v
    }

    /// Sorted values of `name`.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .by_name
            .get(name)
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Union of the lists of `name`'s values for which `keep(value)` holds.
    fn union_of<'a>(&'a self, name: &str, mut keep: impl FnMut(&str) -> bool) -> BoxPostings<'a> {
        let Some(values) = self.by_name.get(name) else {
            return merge(Vec::new());
        };
        merge(
            values
                .iter()
                .filter(|(v, _)| keep(v))
                .map(|(_, l)| list(l))
                .collect(),
        )
    }

    /// Union of the lists of exactly these values.
    fn union_exact<'a>(&'a self, name: &str, vals: &[&str]) -> BoxPostings<'a> {
        let Some(values) = self.by_name.get(name) else {
            return merge(Vec::new());
        };
        merge(
            vals.iter()
                .filter_map(|v| values.get(*v))
                .map(|l| list(l))
                .collect(),
        )
    }

    /// Series whose value (or `""` when absent) satisfies `m`.
    ///
    /// As in Prometheus's `PostingsForMatchers`: matchers that do not match
    /// the empty string select the series having a matching value (they are
    /// intersected); matchers that do match it select everything *except*
    /// the series whose present value fails them (those are subtracted);
    /// when no matcher is of the first kind, we start from all series.
    pub(crate) fn postings_for_matchers(&self, ms: &[Matcher]) -> Vec<u64> {
        let mut its: Vec<BoxPostings<'_>> = Vec::new();
        let mut not_its: Vec<BoxPostings<'_>> = Vec::new();
        for m in ms {
            let is_any = m.kind == MatchType::Regex && (m.value == ".*" || m.value == "(?s:.*)");
            if is_any {
                continue;
            }
            if m.matches_empty() {
                // Subtract series whose present value fails the matcher.
                let p = match m.kind {
                    MatchType::NotEqual => self.union_exact(&m.name, &[m.value.as_str()]),
                    MatchType::Equal => self.union_of(&m.name, |_| true), // `a=""`: label present
                    _ => self.union_of(&m.name, |v| !m.matches(v)),
                };
                not_its.push(p);
            } else {
                let p = match m.kind {
                    MatchType::Equal => self.union_exact(&m.name, &[m.value.as_str()]),
                    MatchType::Regex => match m.set_matches() {
                        Some(set) => {
                            let vals: Vec<&str> = set.iter().map(String::as_str).collect();
                            // Each value's list is independent of `set`'s lifetime.
                            let values = self.by_name.get(m.name.as_str());
                            match values {
                                Some(values) => merge(
                                    vals.iter()
                                        .filter_map(|v| values.get(*v))
                                        .map(|l| list(l))
                                        .collect(),
                                ),
                                None => merge(Vec::new()),
                            }
                        }
                        None => self.union_of(&m.name, |v| m.matches(v)),
                    },
                    _ => self.union_of(&m.name, |v| m.matches(v)),
                };
                its.push(p);
            }
        }
        if its.is_empty() {
            its.push(list(&self.all));
        }
        let mut p = if not_its.is_empty() {
            intersect(its)
        } else {
            without(intersect(its), merge(not_its))
        };
        expand(&mut *p)
    }

    /// Approximate heap bytes of the index.
    pub(crate) fn heap_size(&self) -> usize {
        // hashbrown: one control byte per bucket, buckets ≈ capacity · 8/7.
        fn map_bytes<K, V>(m: &HashMap<K, V>) -> usize {
            m.capacity() * 8 / 7 * (mem::size_of::<(K, V)>() + 1)
        }
        let mut n = self.all.capacity() * 8 + map_bytes(&self.by_name);
        for (name, values) in &self.by_name {
            n += name.len() + map_bytes(values);
            for (v, l) in values {
                n += v.len() + l.capacity() * 8;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MatchType, n: &str, v: &str) -> Matcher {
        Matcher::new(kind, n, v).unwrap()
    }

    /// The selection table: each row's matchers against five series, checked
    /// both through the index and against a brute-force scan.
    #[test]
    fn matcher_semantics_table() {
        let series = [
            Labels::from_pairs([("__name__", "up"), ("a", "x")]), // 1
            Labels::from_pairs([("__name__", "up"), ("a", "y")]), // 2
            Labels::from_pairs([("__name__", "up")]),             // 3
            Labels::from_pairs([("__name__", "down"), ("a", "x"), ("b", "1")]), // 4
            Labels::from_pairs([("__name__", "up"), ("a", "xx"), ("b", "")]), // 5 (b dropped)
        ];
        let mut ix = MemPostings::default();
        for (i, l) in series.iter().enumerate() {
            ix.add(i as u64 + 1, l);
        }
        use MatchType::*;
        let table: Vec<(Vec<Matcher>, Vec<u64>)> = vec![
            (vec![m(Equal, "a", "x")], vec![1, 4]),
            (vec![m(Equal, "a", "")], vec![3]),
            (vec![m(NotEqual, "a", "x")], vec![2, 3, 5]),
            (vec![m(NotEqual, "a", "")], vec![1, 2, 4, 5]),
            (vec![m(Regex, "a", ".*")], vec![1, 2, 3, 4, 5]),
            (vec![m(Regex, "a", ".+")], vec![1, 2, 4, 5]),
            (vec![m(Regex, "a", "x|")], vec![1, 3, 4]),
            (vec![m(Regex, "a", "x.*")], vec![1, 4, 5]),
            (vec![m(Regex, "a", "x|y")], vec![1, 2, 4]),
            (vec![m(NotRegex, "a", "x.*")], vec![2, 3]),
            (vec![m(NotRegex, "a", ".+")], vec![3]),
            (vec![m(NotRegex, "a", "")], vec![1, 2, 4, 5]),
            (vec![m(Equal, "nope", "")], vec![1, 2, 3, 4, 5]),
            (vec![m(Equal, "nope", "1")], vec![]),
            (vec![m(Regex, "nope", ".*")], vec![1, 2, 3, 4, 5]),
            (
                vec![m(Equal, "__name__", "up"), m(Equal, "b", "")],
                vec![1, 2, 3, 5],
            ),
            (
                vec![m(Equal, "__name__", "up"), m(NotEqual, "a", "x")],
                vec![2, 3, 5],
            ),
            (
                vec![
                    m(Equal, "__name__", "up"),
                    m(Regex, "a", "x|y"),
                    m(NotEqual, "a", "y"),
                ],
                vec![1],
            ),
            (
                vec![m(NotEqual, "a", "x"), m(NotRegex, "__name__", "down")],
                vec![2, 3, 5],
            ),
            (vec![], vec![1, 2, 3, 4, 5]),
        ];
        for (ms, want) in table {
            let got = ix.postings_for_matchers(&ms);
            assert_eq!(got, want, "{ms:?}");
            let brute: Vec<u64> = series
                .iter()
                .enumerate()
                .filter(|(_, l)| ms.iter().all(|m| m.matches(l.get_or_empty(&m.name))))
                .map(|(i, _)| i as u64 + 1)
                .collect();
            assert_eq!(got, brute, "brute force disagrees for {ms:?}");
        }
        assert_eq!(ix.label_names(), vec!["__name__", "a", "b"]);
        assert_eq!(ix.label_values("a"), vec!["x", "xx", "y"]);

        ix.remove(&[(1, series[0].clone()), (4, series[3].clone())]);
        assert_eq!(
            ix.postings_for_matchers(&[m(Equal, "a", "x")]),
            Vec::<u64>::new()
        );
        assert_eq!(ix.label_names(), vec!["__name__", "a"]);
        assert_eq!(ix.all(), &[2, 3, 5]);
    }
}
