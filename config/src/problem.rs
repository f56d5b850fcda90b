//! Problems found in an operator's config, each naming the field path.
//!
//! Operators fix configs from error messages, so every problem carries the exact
//! path (`routes[1].match.pathPrefix`) and a reason. Validation collects all of
//! them instead of stopping at the first.

use std::fmt;

/// One problem in a config: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path in the config, such as `routes[1].match.pathPrefix`; `(root)` for the document.
    pub path: String,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Collects problems while validation walks the config.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.list.push(Problem {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many problems were recorded.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Moves these problems into `into`; true when there were none (the part they
    /// were collected for is valid).
    pub fn merge_into(self, into: &mut Problems) -> bool {
        let clean = self.list.is_empty();
        into.list.extend(self.list);
        clean
    }

    /// The recorded problems, in the order they were found.
    pub fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

/// Joins a parent path and a field name: `join("routes[0]", "match")` is `routes[0].match`.
pub fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// Appends an index: `index("routes", 2)` is `routes[2]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Checks that `value` lies in `lo..=hi`; otherwise records
/// `must be LO to HI<unit>, got VALUE` (`unit` such as `" basis points"`, or empty).
/// Returns whether it does.
pub fn in_range<T: PartialOrd + fmt::Display>(
    p: &mut Problems,
    path: &str,
    value: T,
    (lo, hi): (T, T),
    unit: &str,
) -> bool {
    let ok = lo <= value && value <= hi;
    if !ok {
        p.push(path, format!("must be {lo} to {hi}{unit}, got {value}"));
    }
    ok
}

/// Checks a percentage (1 to 100); otherwise records
/// `must be a percentage from 1 to 100, got VALUE`.
pub fn percentage(p: &mut Problems, path: &str, value: u32) -> u32 {
    if value == 0 || value > 100 {
        p.push(
            path,
            format!("must be a percentage from 1 to 100, got {value}"),
        );
    }
    value
}

/// Checks that a list of `len` items holds at most `max`; otherwise records
/// `at most MAX WHAT, got LEN` (`what` such as `"routes"`). Returns whether it does.
pub fn at_most(p: &mut Problems, path: &str, len: usize, max: usize, what: &str) -> bool {
    let ok = len <= max;
    if !ok {
        p.push(path, format!("at most {max} {what}, got {len}"));
    }
    ok
}

/// Checks that `list` holds at most `max` items (`what` names them in the
/// message), then compiles each with `f` at its path `path[i]`, keeping those that
/// compile (the others have recorded their problems).
pub fn bounded_list<T, U>(
    p: &mut Problems,
    path: &str,
    list: &[T],
    (max, what): (usize, &str),
    mut f: impl FnMut(&T, &str, &mut Problems) -> Option<U>,
) -> Vec<U> {
    at_most(p, path, list.len(), max, what);
    list.iter()
        .enumerate()
        .filter_map(|(i, item)| f(item, &index(path, i), p))
        .collect()
}

/// Checks that exactly one of `choices` (`(field, given)`) is given and returns it;
/// otherwise records `give exactly one of a, b, c; got none` (or the ones given).
pub fn exactly_one<'a>(
    path: &str,
    choices: &[(&'a str, bool)],
    p: &mut Problems,
) -> Option<&'a str> {
    let given: Vec<&'a str> = choices
        .iter()
        .filter(|(_, g)| *g)
        .map(|(n, _)| *n)
        .collect();
    if let [one] = given.as_slice() {
        return Some(one);
    }
    let all: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let got = if given.is_empty() {
        "none".to_string()
    } else {
        given.join(", ")
    };
    p.push(
        path,
        format!("give exactly one of {}; got {got}", all.join(", ")),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_counted_and_kept_in_order() {
        let mut p = Problems::default();
        assert_eq!((p.len(), p.is_empty()), (0, true));
        p.push("a", "one");
        p.push("b", "two");
        assert_eq!((p.len(), p.is_empty()), (2, false));
        let v = p.into_vec();
        assert_eq!(v[1].to_string(), "b: two");
    }

    #[test]
    fn a_percentage_is_1_to_100() {
        for (value, ok) in [(0, false), (1, true), (100, true), (101, false)] {
            let mut p = Problems::default();
            assert_eq!(percentage(&mut p, "x", value), value);
            assert_eq!(p.is_empty(), ok, "{value}");
        }
        let mut p = Problems::default();
        percentage(&mut p, "f.rate", 101);
        assert_eq!(
            p.into_vec()[0].to_string(),
            "f.rate: must be a percentage from 1 to 100, got 101"
        );
    }
}
